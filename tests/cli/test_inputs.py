"""Nothing lost, nothing escapes: every input from a user is checked before anything is made.

Task files, goals files and flags are refused in one line (exit 2, no traceback, no folder); names from files
never leave the runs folder; a symbolic link in a run folder is never written through; and an option the
strategy ignores is refused or said, never dropped in silence.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from refineloop.cli.main import main
from refineloop.files.names import safe_component
from refineloop.settings import RunSettings, settings_warnings
from tests.conftest import cli_env, images_in, refineloop

# A goal with no heat words keeps the demo critic from saying DONE, so a run makes exactly N images.
QUICK = ["--goal", "a quiet blue teapot on a table", "--seed", "3", "--max-iterations", "2"]

TASK_HEAD = 'name = "teapot"\ngoal = "an ancient teapot"\nsubject = "one teapot"\nstart_prompt = "a teapot"\n'


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI, expect a one-line refusal on stderr, and return it."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("refineloop: error: "), captured.err
    assert "Traceback" not in captured.out + captured.err
    return captured.err


def ran(*args: str, cwd: Path) -> str:
    """Run the CLI in a subprocess (a run prints through the runner's own stdout), expect success, return stdout."""
    done = refineloop(*args, cwd=cwd)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def made_nothing(root: Path, *kept: str) -> bool:
    """Whether `root` holds only the files the test wrote itself."""
    return sorted(p.name for p in root.iterdir()) == sorted(kept)


# --------------------------------------------------------------------------------------------- task files


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('name = "t"\ngoal = ["a"]\nsubject = "s"\nstart_prompt = "p"\n', "goal must be text, got a list"),
        (TASK_HEAD + 'criteria = "text"\n', "criteria must be a list of texts, got text"),
        (TASK_HEAD + "criteria = [1, 2]\n", "criteria entry 1 must be text"),
        (TASK_HEAD + 'escalation = ["fine", "   "]\n', "escalation entry 2 is blank"),
        (TASK_HEAD + "criteria = [" + ", ".join(['"c"'] * 20_000) + "]\n", "criteria has 20000 entries"),
        (TASK_HEAD + "negative_prompt = {a = 1}\n", "negative_prompt must be text, got a table"),
        (TASK_HEAD + f'judge_focus = "{"x" * 5000}"\n', "judge_focus has 5000 characters"),
        (TASK_HEAD + 'judge_focus = "bell\\u0007"\n', "judge_focus holds a control character"),
        ('name = 7\ngoal = "g"\nsubject = "s"\nstart_prompt = "p"\n', "name must be text, got a number"),
        ('name = "t"\ngoal = "   "\nsubject = "s"\nstart_prompt = "p"\n', "goal is blank"),
        (TASK_HEAD + "colour = 'red'\n", "unknown keys colour"),
        (TASK_HEAD + "criteria = [\n", "is not valid TOML"),
    ],
)
def test_a_bad_task_file_is_refused_in_one_line_naming_the_key(body, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.toml").write_text(body, "utf-8")
    err = refused(["demo", "--task", "t.toml", "--max-iterations", "1"], capsys)
    assert "task file t.toml" in err and message in err
    assert made_nothing(tmp_path, "t.toml"), "a refused task makes no run folder"


def test_a_task_file_that_is_not_utf8_or_too_large_is_refused(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "latin.toml").write_bytes(TASK_HEAD.encode() + b'judge_focus = "caf\xe9"\n')
    err = refused(["demo", "--task", "latin.toml"], capsys)
    assert "task file latin.toml is not UTF-8 text (byte 0xe9 on line 5): save it as UTF-8" in err
    (tmp_path / "huge.toml").write_text(TASK_HEAD + "# " + "x" * 1_100_000 + "\n")
    assert "task file huge.toml is larger than 1,000,000 bytes" in refused(["demo", "--task", "huge.toml"], capsys)
    (tmp_path / "folder.toml").mkdir()
    assert "task file folder.toml is not a regular file" in refused(["demo", "--task", "folder.toml"], capsys)
    assert made_nothing(tmp_path, "latin.toml", "huge.toml", "folder.toml")


def test_a_valid_task_file_with_lists_runs(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.toml").write_text(TASK_HEAD + 'criteria = ["patina"]\nescalation = ["dust", "verdigris"]\n')
    ran("demo", "--task", "t.toml", "--seed", "1", "--max-iterations", "1", "--output-dir", "r", cwd=tmp_path)
    assert images_in(tmp_path / "r") == ["01.png"]


# --------------------------------------------------------------------------------------------- flags


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--seed", "-1"], "--seed must be between 0 and"),
        (["--seed", str(2**64)], "--seed must be between 0 and"),
        (["--width", "100"], "--width must be a multiple of 8"),
        (["--height", "9000"], "--height must be a multiple of 8 from 8 to 8192"),
        (["--steps", "5000"], "--steps must be between 1 and 1000"),
        (["--guidance", "nan"], "--guidance must be a finite number"),
        (["--initial-temp", "inf"], "--initial-temp must be a finite number"),
        (["--cooling-rate", "nan"], "--cooling-rate must be a finite number"),
        (["--max-seconds", "inf"], "--max-seconds must be a finite number"),
        (["--initial-strength=-inf"], "--initial-strength must be a finite number"),
        (["--image-model", ""], "--image-model is empty"),
        (["--image-model", "hf:"], "needs a hub id after hf:"),
        (["--image-model", "sketch:size=big"], "sketch option size 'big', which is not a number"),
        (["--image-model", "sketch:colour=red"], "unknown sketch option 'colour'"),
        (["--eval-model", "foo:"], "--eval-model 'foo:' is not a model"),
        (["--eval-model", "ollama:"], "--eval-model 'ollama:' is not a model"),
        (["--eval-model", " "], "--eval-model is empty"),
        (["--agent-model", "ollama:"], "--agent-model 'ollama:' is not a model"),
        (["--device", "cuda:x"], "unknown device 'cuda:x'"),
        (["--output-dir", "a\x01b"], "--output-dir holds a control character"),
        (["--max-iterations", "1000000"], "--max-iterations must be 0 (until DONE) or between 1 and 10000"),
        (["--goal", "   "], "--goal is blank"),
        (["--task", ""], "--task is empty"),
        (["--strategy", "greedy", "--judge", "pairwise"], "--judge pairwise compares the new image"),
        (["--strategy", "agent", "--judge", "pairwise"], "but agent keeps every image"),
    ],
)
def test_bad_flags_are_refused_before_any_folder(flags, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = refused(["demo", *flags], capsys)
    assert message in err
    assert made_nothing(tmp_path), "a refused run makes no folder"


def test_every_float_setting_refuses_non_finite_values():
    floats = [name for name, value in RunSettings().to_dict().items() if isinstance(value, float)]
    assert "guidance" not in floats  # optional: None by default, checked below with the rest
    for name in [*floats, "guidance"]:
        for bad in (float("nan"), float("inf"), float("-inf")):
            with pytest.raises(Exception, match=f"--{name.replace('_', '-')} must be a finite number"):
                RunSettings(**{name: bad}).validate()


def test_settings_from_a_form_or_a_file_are_type_checked():
    with pytest.raises(Exception, match="--max-iterations takes a whole number, got '4'"):
        RunSettings.from_dict({"max_iterations": "4"}).validate()
    with pytest.raises(Exception, match="--review takes true or false"):
        RunSettings.from_dict({"review": "yes"}).validate()
    with pytest.raises(Exception, match="--strategy takes text"):
        RunSettings.from_dict({"strategy": ["greedy"]}).validate()


def test_a_fork_with_a_bad_override_makes_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ran("demo", *QUICK, "--strategy", "climbing", "--output-dir", "orig", cwd=tmp_path)
    err = refused(["fork", "orig", "--from-iteration", "1", "--guidance", "nan"], capsys)
    assert "--guidance must be a finite number" in err
    assert not (tmp_path / "orig-fork-1").exists()


# --------------------------------------------------------------------------------------------- ignored options


def test_options_the_strategy_ignores_are_warned_about(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flags = ["--strategy", "greedy", "--patience", "5", "--initial-temp", "3", "--cooling-rate", "0.5"]
    flags += ["--initial-strength", "0.6", "--judge-samples", "2", "--agent-model", "demo", "--agent-router-calls", "5"]
    flags += ["--no-sideways"]
    out = ran("demo", *QUICK, *flags, "--output-dir", "r", cwd=tmp_path)
    warnings = [line for line in out.splitlines() if line.startswith("warning: ")]
    for flag in (
        "--patience 5",
        "--initial-temp and --cooling-rate",
        "--initial-strength",
        "--judge-samples 2",
        "--agent-model demo",
        "--agent-router-calls",
        "--no-sideways",
    ):
        assert any(flag in line and "greedy" in line for line in warnings), (flag, warnings)
    assert images_in(tmp_path / "r") == ["01.png", "02.png"]


def test_options_the_strategy_uses_give_no_warning():
    assert settings_warnings(RunSettings(strategy="annealing", initial_temp=3.0, cooling_rate=0.5)) == []
    assert settings_warnings(RunSettings(strategy="img2img", initial_strength=0.6, patience=2, judge_samples=3)) == []
    assert settings_warnings(RunSettings(strategy="climbing", patience=5, judge="pairwise", sideways=False)) == []
    assert settings_warnings(RunSettings(strategy="agent", agent_model="demo", agent_router_calls=5)) == []
    assert settings_warnings(RunSettings(strategy="evaluator-optimizer", agent_model="demo")) == []


# --------------------------------------------------------------------------------------------- names and paths


@pytest.mark.parametrize(
    "text",
    ["x/../../../tmp/elsewhere", "..", ".", "", "/", ".hidden", "a\x00b\nc", "\\..\\win", "é" * 300, "---", "CON"],
)
def test_safe_component_is_one_bounded_component(text):
    name = safe_component(text)
    assert name and "/" not in name and "\\" not in name and ".." not in name and not name.startswith(".")
    assert name.isprintable() and len(name.encode()) <= 120
    assert Path(name).name == name and len(Path(name).parts) == 1


def test_a_task_name_with_traversal_stays_inside_runs(capsys, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    body = TASK_HEAD.replace('name = "teapot"', 'name = "x/../../../tmp/elsewhere"')
    (work / "t.toml").write_text(body)
    ran("demo", "--task", "t.toml", "--seed", "1", "--max-iterations", "1", cwd=work)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]
    assert sorted(p.name for p in work.iterdir()) == ["runs", "t.toml"]
    (run,) = (work / "runs").iterdir()
    assert run.is_dir() and run.name.endswith("-x-tmp-elsewhere") and images_in(run) == ["01.png"]


def test_batch_folders_come_from_safe_names(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    goals = tmp_path / "..evil name.txt"
    goals.write_text("../../outside\n")
    assert main(["batch", str(goals), "--max-iterations", "1", "--seed", "1"]) == 0
    (batch,) = (tmp_path / "runs").iterdir()
    assert batch.name == "evil-name-batch"
    items = sorted(p.name for p in batch.iterdir() if p.is_dir())
    assert items == ["001-outside"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["..evil name.txt", "runs"]


# --------------------------------------------------------------------------------------------- symbolic links


def paused_run(root: Path) -> Path:
    """An unfinished run: paused at its first review question because standard input is closed."""
    args = [sys.executable, "-m", "refineloop", "demo", *QUICK, "--review", "--output-dir", "run"]
    done = subprocess.run(args, cwd=root, env=cli_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert done.returncode == 3, done.stdout + done.stderr
    return root / "run"


def test_a_symlinked_trace_is_refused_and_its_target_untouched(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = paused_run(tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me\n")
    (run / "trace.jsonl").unlink()
    (run / "trace.jsonl").symlink_to(outside)
    before = sorted(p.name for p in run.iterdir())
    err = refused(["resume", "run"], capsys)
    assert "trace.jsonl is a symbolic link: refineloop does not write through links; remove it" in err
    assert outside.read_text() == "keep me\n"
    assert sorted(p.name for p in run.iterdir()) == before and images_in(run) == ["01.png"]


@pytest.mark.parametrize("name", ["01.json", "02.png", "summary.txt", "collage.png", "report.html", ".lock"])
def test_any_symlink_in_a_run_folder_is_refused_on_resume(name, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = paused_run(tmp_path)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"untouched")
    target = run / name
    target.unlink(missing_ok=True)
    target.symlink_to(outside)
    err = refused(["resume", "run"], capsys)
    assert f"{name} is a symbolic link" in err
    assert outside.read_bytes() == b"untouched"
    assert images_in(run) == ["01.png"] or name == "02.png"


# --------------------------------------------------------------------------------------------- batches


def test_a_bad_batch_item_fails_alone_while_the_others_run(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "chars.toml").write_text(TASK_HEAD + 'criteria = "text"\n')
    goals = tmp_path / "goals.jsonl"
    goals.write_text(
        '"a quiet blue teapot"\n'
        '{"goal": ["not", "text"]}\n'
        '{"goal": "a calm lake", "seed": -5}\n'
        '{"task": "chars.toml"}\n'
        '{"goal": "a still pond", "width": 100}\n'
        "{not json\n"
        '"a green kettle"\n'
    )
    code = main(["batch", str(goals), "--max-iterations", "1", "--seed", "2", "--output-dir", "b"])
    out = capsys.readouterr().out
    assert code == 1 and "Traceback" not in out
    rows = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert [(r["index"], r["status"]) for r in rows] == [
        (1, "done"),
        (2, "failed"),
        (3, "failed"),
        (4, "failed"),
        (5, "failed"),
        (6, "failed"),
        (7, "done"),
    ]
    errors = {r["index"]: r["error"] for r in rows}
    assert errors[2].startswith("goals.jsonl:2: goal must be text")
    assert errors[3].startswith("goals.jsonl:3: --seed must be between 0 and")
    assert errors[4].startswith("goals.jsonl:4: task file") and "criteria must be a list of texts" in errors[4]
    assert errors[5].startswith("goals.jsonl:5: --width must be a multiple of 8")
    assert errors[6].startswith("goals.jsonl:6: not valid JSON")
    assert all("\n" not in e for e in errors.values())
    summary = (tmp_path / "b" / "summary.txt").read_text()
    assert summary.count(" failed ") == 5 and "error: goals.jsonl:3: --seed" in summary
    folders = sorted(p.name for p in (tmp_path / "b").iterdir() if p.is_dir())
    assert folders == ["001-a-quiet-blue-teapot", "007-a-green-kettle"], "a refused item makes no folder"
    # Fixed, the refused item runs on the next start; the finished ones are left as they are.
    goals.write_text(goals.read_text().replace('"seed": -5', '"seed": 5'))
    main(["batch", str(goals), "--max-iterations", "1", "--seed", "2", "--output-dir", "b"])
    rows = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert rows[2]["status"] == "done" and rows[0]["status"] == "done"


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("g.txt", b"a teapot\n\xff\xfe\n", "goals file g.txt is not UTF-8 text (byte 0xff on line 2)"),
        ("g.toml", b"[[items]\n", "not valid TOML"),
        ("g.txt", b"# nothing\n", "has no goals"),
        ("g.jsonl", b'{"goal": 3}\n', "g.jsonl:1: goal must be text"),
        ("g.toml", b"[defaults]\nseed = -1\n[[items]]\ngoal = 'x'\n", "g.toml item 1: --seed must be between"),
    ],
)
def test_a_goals_file_that_cannot_run_at_all_fails_in_one_line(name, data, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_bytes(data)
    err = refused(["batch", name, "--max-iterations", "1"], capsys)
    assert message in err
    assert made_nothing(tmp_path, name)

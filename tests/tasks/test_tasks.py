"""Task presets, user task files and quick goals."""

from __future__ import annotations

import pytest

from refineloop.cli.main import main
from refineloop.errors import TaskError
from refineloop.tasks import load_task, preset_names, task_from_goal


def test_hotdog_preset_ships_with_an_escalation_scale():
    task = load_task("hotdog")
    assert "hotdog" in preset_names()
    assert task.subject.startswith("a single hotdog") and "hotdog" not in task.negative_prompt
    assert len(task.escalation) >= 4 and task.criteria


def test_user_task_file_loads(tmp_path):
    path = tmp_path / "teapot.toml"
    path.write_text('name = "teapot"\ngoal = "an ancient teapot"\nsubject = "one teapot"\nstart_prompt = "a teapot"\n')
    task = load_task(str(path))
    assert (task.name, task.subject, task.escalation) == ("teapot", "one teapot", ())


def test_task_file_lacking_keys_names_them(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\ngoal = "y"\n')
    with pytest.raises(TaskError, match="lacks subject, start_prompt"):
        load_task(str(path))


def test_goal_builds_a_quick_task():
    task = task_from_goal("  a cosy cabin   in snow ")
    assert task.goal == "a cosy cabin in snow" and task.name == "a-cosy-cabin-in-snow"
    with pytest.raises(TaskError):
        task_from_goal("   ")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--task", "missing.toml"], "task file missing.toml not found"),
        (["--task", "nonsense"], "unknown task 'nonsense'"),
    ],
)
def test_cli_reports_task_problems_in_one_line(flags, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists(), "a refused run makes no folder"


def test_cli_reports_a_task_file_without_keys(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "half.toml").write_text('name = "half"\n')
    assert main(["demo", "--task", "half.toml"]) == 2
    assert "lacks goal, subject, start_prompt" in capsys.readouterr().err

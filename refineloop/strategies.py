"""The search strategies, one table: every way a strategy differs from another is a field of its entry.

Settings validation, the graph builder, the nodes, the runner and the CLI read this table instead of naming
strategies, so a new strategy is one `StrategySpec` here (or given to `register_strategy`) plus its acceptance
rule (refineloop.acceptance).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from refineloop.acceptance import Rule, climb, keep_better, keep_new, metropolis

#: How a strategy's graph is laid out (refineloop.graph_build): the shared accept-and-route loop, agent mode's
#: tool-calling router, or evaluator-optimizer's two agents.
Shape = Literal["loop", "agent-router", "evaluator-optimizer"]


@dataclass(frozen=True)
class StrategySpec:
    """One search strategy."""

    name: str
    """What --strategy names it, and the graph's suffix (refine-<name>)."""
    description: str
    """One line for --help and Studio's form."""
    rule: Rule
    """The acceptance rule its accept node applies."""
    shape: Shape = "loop"
    """Which graph builder lays it out."""
    stops_on_misses: bool = False
    """Whether --patience misses in a row (images that did not beat the best) stop the run."""
    default_patience: int = 3
    """The patience used when --patience is not given."""
    walks_from: Literal["best", "current"] = "best"
    """Where the proposer starts the next idea from: the best image, or the one the walk stands on."""
    compares_with: Literal["best", "current"] = "best"
    """Which image a new one must beat: the best (a pairwise duel is held with it, and a re-scored incumbent puts
    the walk back on the best), or the current one."""
    follows_critic: bool = True
    """Whether an adopted image's next idea (the critic's) is drawn next; if not, the proposer always writes one."""
    cools: bool = False
    """Whether the proposer's sampling temperature follows the cooling schedule (--initial-temp, --cooling-rate)."""
    from_image: bool = False
    """Whether each round starts from the best image (img2img, with --initial-strength to --final-strength)."""
    comparing: bool = False
    """Whether acceptance compares the new image with another, so a pairwise judge has a duel to decide."""
    rescores_ties: bool = True
    """Whether a tie with the best under --judge-samples has the best judged again."""

    @property
    def accept_node(self) -> str:
        """The name of the node that writes its acceptance (a fork seeds its new thread as this node)."""
        return "accept_" + self.name.replace("-", "_")

    @property
    def moves_sideways(self) -> bool:
        """Whether an image level with the best moves the walk onto it (unless --no-sideways): its rule is `climb`."""
        return self.rule is climb

    @property
    def reviewable(self) -> bool:
        """Whether --review pauses it (only the shared loop has the review step)."""
        return self.shape == "loop"

    @property
    def agents(self) -> bool:
        """Whether chat-model agents steer it (they use --agent-model)."""
        return self.shape != "loop"


BUILT_IN = (
    StrategySpec(
        name="greedy",
        description="always keep the new image and follow the critic's idea",
        rule=keep_new,
        rescores_ties=False,
    ),
    StrategySpec(
        name="climbing",
        description="keep an image that beats the best, walk on to one level with it; a new idea after each miss",
        rule=climb,
        stops_on_misses=True,
        default_patience=10,
        walks_from="current",
        comparing=True,
    ),
    StrategySpec(
        name="annealing",
        description="walk on from the current image, sometimes downhill as the temperature cools",
        rule=metropolis,
        walks_from="current",
        compares_with="current",
        follows_critic=False,
        cools=True,
        comparing=True,
    ),
    StrategySpec(
        name="img2img",
        description="climbing in image space: each round starts from the best image",
        rule=keep_better,
        stops_on_misses=True,
        default_patience=4,
        from_image=True,
        comparing=True,
    ),
    StrategySpec(
        name="agent",
        description="an LLM router picks the next step",
        rule=keep_new,
        shape="agent-router",
    ),
    StrategySpec(
        name="evaluator-optimizer",
        description="a prompt-writer agent and a critic agent take turns",
        rule=keep_new,
        shape="evaluator-optimizer",
    ),
)

#: Every strategy by name, in the order --help lists them.
STRATEGY_SPECS: dict[str, StrategySpec] = {spec.name: spec for spec in BUILT_IN}


def spec_for(name: str) -> StrategySpec:
    """The entry of strategy `name`; KeyError for an unknown one (settings validation refuses those first)."""
    return STRATEGY_SPECS[name]


def strategy_names(test: str = "") -> tuple[str, ...]:
    """Names of every strategy, or of those whose boolean field or property `test` is true."""
    return tuple(name for name, spec in STRATEGY_SPECS.items() if not test or getattr(spec, test))


def register_strategy(spec: StrategySpec) -> None:
    """Add (or replace) a strategy; settings, graphs and the CLI see it from now on."""
    STRATEGY_SPECS[spec.name] = spec


def unregister_strategy(name: str) -> None:
    """Remove a registered strategy (a test's toy one, say)."""
    STRATEGY_SPECS.pop(name, None)

"""Every way an image is judged, in one home: the pieces that make a run's verdicts hold up under any critic.

- `base`: a judging step's context (`Judging`) and its one critic-call budget (`Budget`, thread-safe);
- `knobs`: the judges' temperatures and margins;
- `score`: one reading of the 1-10 judge (cold or warm), and a round's samples of an image folded into its record;
- `checklist`: the critic writes weighted yes/no questions once; each image scores its weighted pass rate,
  P(yes) where the backend returns log probabilities, and the unmet questions go to the proposer;
- `samples`: the run's own judge, whichever it is: a round's samples, or a fresh look;
- `duel`: two images compared in both orders, with position flips and ties counted (every duel of a run);
- `rescore`: a tie with the best has the best judged again;
- `confirm`: a DONE stops a run only after a second look agrees;
- `round`: one round judged, as the evaluate node's update;
- `final_pick`: at the stop, the top images meet again under a careful judge and the winner is crowned;
- `audit`: an independent critic checks at the end whether the run improved on its first image;
- `finish`: the stop node's judging (the final pick, then the audit), as its update;
- `measure`: the judge's behaviour counted in passing (summary.txt, report.html) and by `judge-check`;
- `check`: a critic measured on purpose, image by image (the `judge-check` command is refineloop.apps.judge_check).

Nodes call `round.judge_round` and `finish.finish`; nothing here imports a node.
"""

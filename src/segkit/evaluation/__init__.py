"""``segkit eval`` behind the CLI: pair files, score cases (in a pool), cross-check with nnU-Net, write reports.

- `settings`: what the ``eval`` config section (`EvalConfig`, the one holder of the settings) asks for.
- `matching`: reference and prediction files by case id.
- `cases`: load, check and score one case (never raises for bad data; an unusable prediction is scored
  as an empty one).
- `nnunet_check`: nnU-Net's own evaluator in the background, compared number by number.
- `run`: `evaluate_folders`, the whole run.
- `reports`: the JSON/CSV reports and the summary; `figure`: the PNG (matplotlib, imported lazily).
"""

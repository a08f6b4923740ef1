"""Stage 3: train fresh classifiers on a synthetic set and on real-data baselines under one
protocol (`protocol`), the baselines' selectors (`selectors`), results tables (`results`) and
figures (`plots`). Reads synthetic sets only through `utils.synset`."""

"""The training scripts, and the modules they share (one concern each).

A package, so that tests and other code import `training.finetune_translation` or `training.data` like any module.
Each script also runs by path, `python training/<script>.py`: Python then puts `training/` itself first on
`sys.path`, so every script starts by putting the checkout there instead, which makes `training` and
`hf_scratch_transformer` importable whether or not the package is installed.
"""

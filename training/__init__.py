"""The training scripts, and the modules they share (one concern each), installed as `hf_scratch_transformer.training`.

Each script is a subcommand of `hf-scratch-transformer` (training/cli.py): `hf-scratch-transformer
finetune-translation --help`, or `python -m hf_scratch_transformer.training.cli finetune-translation` where the
command is not on PATH (`accelerate launch -m ...` runs it that way on several processes). They need the `train`
extra: pip install "hf-scratch-transformer[train]".
"""

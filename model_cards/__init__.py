"""The model card templates (Jinja, as `huggingface_hub`'s own): training/model_card.py fills them for a run.
Installed with the package as `hf_scratch_transformer.model_cards`."""

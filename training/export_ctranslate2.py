"""Export a trained translator to CTranslate2 (`hf_scratch_transformer.export`), for serving without Python or torch.

    hf-scratch-transformer export-ctranslate2 runs/multi30k/averaged runs/multi30k/ct2 --quantization int8

The folder loads with `ctranslate2.Translator(output_dir)`; `hf_scratch_transformer.export.decoding_options` gives
the `translate_batch` settings that decode as `generate()` does. Needs the `export` extra.
"""

import argparse

from hf_scratch_transformer.export import QUANTIZATIONS, export_ctranslate2

from .model_loading import explained_load_errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", help="A translator's folder (a run's --output_dir) or Hub id, and its tokenizer.")
    parser.add_argument("output_dir", help="The CTranslate2 model folder to write.")
    parser.add_argument("--quantization", choices=QUANTIZATIONS, default=None, help="Default: float32 weights.")
    parser.add_argument("--force", action="store_true", help="Replace output_dir if it exists.")
    args = parser.parse_args()
    try:
        with explained_load_errors("model_dir", args.model_dir):
            output_dir = export_ctranslate2(args.model_dir, args.output_dir, args.quantization, force=args.force)
    except (ValueError, RuntimeError) as error:
        raise SystemExit(f"export-ctranslate2: {error}") from None
    print(f"Wrote the CTranslate2 model to {output_dir}")


if __name__ == "__main__":
    main()

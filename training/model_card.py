"""The model card (README.md) of a run, filled from what the run left in its folder, and its training-curve picture.

    card = make_model_card("runs/multi30k", repo_id="user/scratch-multi30k", datasets=["bentrevett/multi30k"])
    card.text  # Markdown with YAML front matter; card.data holds the front matter
    svg = training_curves_svg(json.load(open("runs/multi30k/trainer_state.json"))["log_history"])

The templates are `model_cards/{translation,sentiment,pretrained,adapter}.md` (Jinja, as `huggingface_hub`'s own
card templates). The front matter is `huggingface_hub.ModelCardData`, whose `eval_results` become the `model-index`
block the Hub reads its metrics from. What goes in comes from the run folder only: `config.json` (or
`adapter_config.json`), `all_results.json`, `trainer_state.json` (hyperparameters and the logged curves),
`translation_samples.jsonl`, `attention.png` (shown when the run made one), and the weights' header (parameter
count).
"""

import json
import struct
from importlib import resources
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

# model_cards/ of the repository, installed as the package data `hf_scratch_transformer.model_cards`.
TEMPLATES = resources.files("hf_scratch_transformer.model_cards")
CURVES_FILE = "training_curves.svg"
ATTENTION_FILE = "attention.png"  # finetune_translation.py's picture of the cross-attention of a few translations
PAPER_URL = "https://arxiv.org/abs/1706.03762"

# kind -> (Hub pipeline tag, model-index task type, the metrics of all_results.json the Hub shows, in order)
KINDS = {
    "translation": ("translation", "translation", ["eval_bleu", "eval_chrf", "eval_loss"]),
    "sentiment": ("text-classification", "text-classification", ["eval_accuracy", "eval_f1", "eval_loss"]),
    "pretrained": ("text2text-generation", "text2text-generation", ["eval_loss"]),
    "adapter": (None, None, ["eval_bleu", "eval_chrf", "eval_accuracy", "eval_f1", "eval_loss"]),
}
METRIC_NAMES = {"eval_bleu": "BLEU", "eval_chrf": "chrF", "eval_accuracy": "Accuracy", "eval_f1": "F1",
                "eval_loss": "Loss"}  # fmt: skip


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def run_kind(run_dir: Path) -> str:
    """Which template fits the run: an adapter, a classifier, a translator (it was scored with BLEU or wrote
    translations), or else a pretrained (denoising) checkpoint."""
    if (run_dir / "adapter_config.json").is_file():
        return "adapter"
    architectures = (read_json(run_dir / "config.json") or {}).get("architectures") or [""]
    if architectures[0].endswith("ForSequenceClassification"):
        return "sentiment"
    results = read_json(run_dir / "all_results.json") or {}
    if "eval_bleu" in results or (run_dir / "translation_samples.jsonl").is_file():
        return "translation"
    return "pretrained"


def parameter_count(weights: Path) -> int | None:
    """Parameters stored in a safetensors file, from its JSON header (no tensor is read)."""
    if not weights.is_file():
        return None
    with weights.open("rb") as file:
        header = json.loads(file.read(struct.unpack("<Q", file.read(8))[0]))
    count = 0
    for name, tensor in header.items():
        if name != "__metadata__":
            size = 1
            for dimension in tensor["shape"]:
                size *= dimension
            count += size
    return count


def hyperparameters(state: dict | None, config: dict | None) -> list[tuple[str, object]]:
    """What trainer_state.json and config.json record of how the model was trained."""
    rows = []
    if state:
        rates = [entry["learning_rate"] for entry in state.get("log_history", []) if "learning_rate" in entry]
        rows += [
            ("batch size per device", state.get("train_batch_size")),
            ("optimizer steps", state.get("global_step")),
            ("epochs", round(state.get("epoch") or 0, 2)),
            ("peak learning rate (logged)", f"{max(rates):.3g}" if rates else None),
        ]
    if config:
        rows += [(name, config.get(name)) for name in ("dropout", "label_smoothing", "normalize_before")]
    return [(name, value) for name, value in rows if value is not None]


def training_curves_svg(log_history: list[dict], metric: str | None = None) -> str | None:
    """Training loss against step, and beside it `metric` (or the evaluation loss) against step, as a small SVG
    (no plotting library needed). None when nothing was logged."""
    panels = [("training loss", [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e])]
    for key in (metric, "eval_loss"):
        points = [(e["step"], e[key]) for e in log_history if key and key in e and "step" in e]
        if points:
            panels.append((key.removeprefix("eval_") + " (validation)", points))
            break
    panels = [(title, points) for title, points in panels if points]
    if not panels:
        return None
    width, height, margin = 320, 220, 45
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width * len(panels)}" height="{height}" '
             'font-family="sans-serif" font-size="11">']  # fmt: skip
    for index, (title, points) in enumerate(panels):
        left = index * width + margin
        plot_width, plot_height = width - 1.5 * margin, height - 2 * margin
        steps, values = [step for step, _ in points], [value for _, value in points]
        low_step, high_step = min(steps), max(steps)
        low, high = min(values), max(values)

        def x(step, low_step=low_step, high_step=high_step, left=left, plot_width=plot_width):
            return left + plot_width * ((step - low_step) / (high_step - low_step) if high_step > low_step else 0.5)

        def y(value, low=low, high=high, plot_height=plot_height):
            return margin + plot_height * (1 - ((value - low) / (high - low) if high > low else 0.5))

        line = " ".join(f"{x(step):.1f},{y(value):.1f}" for step, value in points)
        bottom, right = margin + plot_height, left + plot_width
        parts += [
            f'<text x="{left + plot_width / 2}" y="{margin - 15}" text-anchor="middle" font-size="13">{title}</text>',
            f'<polyline points="{left},{margin} {left},{bottom} {right},{bottom}" fill="none" stroke="#444"/>',
            f'<polyline points="{line}" fill="none" stroke="#1f77b4" stroke-width="2"/>',
            f'<text x="{left - 4}" y="{margin + 4}" text-anchor="end">{high:.3g}</text>',
            f'<text x="{left - 4}" y="{bottom}" text-anchor="end">{low:.3g}</text>',
            f'<text x="{left}" y="{bottom + 15}" text-anchor="middle">{low_step}</text>',
            f'<text x="{right}" y="{bottom + 15}" text-anchor="middle">{high_step}</text>',
            f'<text x="{left + plot_width / 2}" y="{bottom + 30}" text-anchor="middle">step</text>',
        ]
    return "\n".join(parts + ["</svg>\n"])


def make_model_card(
    run_dir: str | Path,
    repo_id: str,
    datasets: list[str] | None = None,
    base_model: str | None = None,
    license: str = "apache-2.0",
    with_curves: bool = True,
    ctranslate2: str | None = None,
) -> ModelCard:
    """The card of the run in `run_dir`, to be pushed as `repo_id`'s README.md. `datasets` are the Hub ids the
    run trained on (none for local files); `base_model` the checkpoint it was fine-tuned from (an adapter's is
    read from adapter_config.json). `with_curves`: the card shows training_curves.svg, pushed beside it.
    `ctranslate2`: the quantization of the CTranslate2 export pushed in `ctranslate2/`, which the card shows how to
    serve; None when there is none."""
    run_dir = Path(run_dir)
    kind = run_kind(run_dir)
    pipeline_tag, task_type, metric_keys = KINDS[kind]
    config = read_json(run_dir / "config.json")
    adapter = read_json(run_dir / "adapter_config.json")
    results = read_json(run_dir / "all_results.json") or {}
    state = read_json(run_dir / "trainer_state.json")
    if adapter:
        base_model = base_model or adapter.get("base_model_name_or_path")
        task_type = {"SEQ_CLS": "text-classification"}.get(adapter.get("task_type"), "translation")

    model_name = repo_id.split("/")[-1]
    dataset_type = datasets[0] if datasets else "local-files"
    eval_results = [
        EvalResult(
            task_type=task_type,
            dataset_type=dataset_type,
            dataset_name=dataset_type,
            dataset_split="validation",
            metric_type=key.removeprefix("eval_"),
            metric_name=METRIC_NAMES[key],
            metric_value=results[key],
        )
        for key in metric_keys
        if isinstance(results.get(key), (int, float))
    ]
    card_data = ModelCardData(
        library_name="peft" if adapter else "transformers",
        pipeline_tag=pipeline_tag,
        license=license,
        tags=["scratch_transformer", "transformer", "attention-is-all-you-need", kind, *(["lora"] if adapter else [])],
        datasets=datasets or None,
        base_model=base_model,
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
    )
    samples_path = run_dir / "translation_samples.jsonl"
    samples = [json.loads(line) for line in samples_path.read_text(encoding="utf-8").splitlines()[:3]] if (
        samples_path.is_file()
    ) else []  # fmt: skip
    parameters = parameter_count(run_dir / ("adapter_model.safetensors" if adapter else "model.safetensors"))
    first_metric = next((key for key in metric_keys if key in results), None)
    has_curves = with_curves and state is not None and training_curves_svg(state["log_history"], first_metric)
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATES / f"{kind}.md"),
        repo_id=repo_id,
        model_name=model_name,
        config=config or {},
        adapter=adapter or {},
        parameters=f"{parameters:,}" if parameters else "unknown",
        datasets=datasets or [],
        base_model=base_model,
        hyperparameters=hyperparameters(state, config),
        results=[(METRIC_NAMES.get(key, key), results[key]) for key in metric_keys if key in results],
        train_loss=results.get("train_loss"),
        samples=samples,
        curves_file=CURVES_FILE if has_curves else None,
        attention_file=ATTENTION_FILE if (run_dir / ATTENTION_FILE).is_file() else None,
        paper_url=PAPER_URL,
        ctranslate2=ctranslate2,
    )

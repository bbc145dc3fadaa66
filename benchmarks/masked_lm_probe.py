"""How much a masked-LM checkpoint has learned, and how much of it comes from word order.

Each held-out text is tokenized and packed as pretrain.py packs it (joined with </s>, cut into chunks); 15 % of the
positions of each chunk become <mask> (all of them: none of BERT's kept or random tokens, whose easy targets lower
the training loss), and the checkpoint's encoder and LM head predict them. Three numbers, all on the same targets:

- as written: the masked-token loss (nats);
- words shuffled: the same, each chunk's tokens shuffled together with their masks, so that the context holds the
  same words in a random order;
- unigram: the loss of predicting every masked token by its frequency in the training text, no context at all.

A model that knows which words go together but not their order does as well shuffled as written; one that has
learned little is close to the unigram loss.

    python -m benchmarks.masked_lm_probe --model runs/recipes/pretrain_reviews/model \\
        --text_file runs/recipes/pretrain_reviews/text_validation.jsonl \\
        --train_file runs/recipes/pretrain_reviews/text_train.jsonl
"""

import argparse
import collections
import itertools
import json
import math

import torch
import torch.nn.functional as F
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import hf_scratch_transformer  # noqa: F401  (registers the Auto classes)
from hf_scratch_transformer.training.pretrain import pack_into_chunks


def read_texts(path: str, column: str, limit: int | None, every: int = 1) -> list[str]:
    """The `column` of a JSON Lines file, one row in `every`, at most `limit` rows."""
    with open(path, encoding="utf-8") as file:
        rows = itertools.islice(file, 0, None, every)
        return [json.loads(line)[column] for line in itertools.islice(rows, limit)]


def packed_chunks(tokenizer, texts: list[str], length: int) -> torch.Tensor:
    """The texts packed into chunks of `length` tokens as pretrain.py packs them: (N, length)."""
    token_ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    chunks = pack_into_chunks(token_ids, tokenizer.eos_token_id, length)
    if not chunks:
        raise SystemExit(f"The texts give no chunk of {length} tokens: pass more of them or a smaller --chunk_length.")
    return torch.tensor(chunks)


@torch.no_grad()
def masked_token_loss(model, chunks: torch.Tensor, masked: torch.Tensor, mask_token_id: int, batch_size: int) -> float:
    """Mean cross-entropy (nats) of the LM head at the masked positions of `chunks` (both (N, S))."""
    encoder, lm_head = model.get_encoder(), model.get_output_embeddings()
    total = 0.0
    for start in range(0, len(chunks), batch_size):
        ids, chosen = chunks[start : start + batch_size], masked[start : start + batch_size]
        states = encoder(input_ids=ids.masked_fill(chosen, mask_token_id)).last_hidden_state  # (B, S, D)
        logits = lm_head(states[chosen])  # (M, V): the M masked positions of the batch
        total += F.cross_entropy(logits.float(), ids[chosen], reduction="sum").item()
    return total / masked.sum().item()


def unigram_loss(train_ids: list[list[int]], targets: torch.Tensor, vocab_size: int) -> float:
    """Mean cross-entropy of `targets` under the token frequencies of `train_ids` (add-half smoothing)."""
    counts = collections.Counter(token for ids in train_ids for token in ids)
    total = sum(counts.values()) + 0.5 * vocab_size
    return -sum(math.log((counts[token] + 0.5) / total) for token in targets.tolist()) / targets.numel()


def probe(model, tokenizer, texts, train_texts, chunk_length=256, mask_fraction=0.15, seed=0) -> dict:
    """The three losses of the module's docstring, on `texts` packed into chunks of `chunk_length`."""
    chunks = packed_chunks(tokenizer, texts, chunk_length)
    train_ids = tokenizer(train_texts, add_special_tokens=False, verbose=False)["input_ids"]
    return probe_chunks(model, chunks, train_ids, tokenizer.mask_token_id, len(tokenizer), mask_fraction, seed)


def probe_chunks(model, chunks, train_ids, mask_token_id, vocab_size, mask_fraction=0.15, seed=0, batch_size=32):
    """`probe` on token ids: `chunks` (N, S), `train_ids` the training text's ids for the frequencies."""
    generator = torch.Generator().manual_seed(seed)
    masked = torch.rand(chunks.shape, generator=generator) < mask_fraction  # (N, S)
    order = torch.stack([torch.randperm(chunks.shape[1], generator=generator) for _ in range(len(chunks))])  # (N, S)
    shuffled, shuffled_masked = chunks.gather(1, order), masked.gather(1, order)  # each mask moves with its token
    return {
        "chunks": len(chunks),
        "masked_tokens": int(masked.sum()),
        "as_written": masked_token_loss(model, chunks, masked, mask_token_id, batch_size),
        "words_shuffled": masked_token_loss(model, shuffled, shuffled_masked, mask_token_id, batch_size),
        "unigram": unigram_loss(train_ids, chunks[masked], vocab_size),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a checkpoint folder (pretrain.py's output)")
    parser.add_argument("--tokenizer", help="its tokenizer, if not in --model")
    parser.add_argument("--text_file", required=True, help="held-out text, JSON Lines")
    parser.add_argument("--train_file", required=True, help="the pretraining text, JSON Lines (for the frequencies)")
    parser.add_argument("--text_column", default="text")
    parser.add_argument("--max_texts", type=int, default=256, help="held-out texts to read")
    parser.add_argument("--max_train_texts", type=int, default=20000, help="training texts counted (spread evenly)")
    parser.add_argument("--train_every", type=int, default=8, help="count one training text in this many")
    parser.add_argument("--chunk_length", type=int, default=256)
    parser.add_argument("--mask_fraction", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    model = AutoModelForSeq2SeqLM.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
    texts = read_texts(args.text_file, args.text_column, args.max_texts)
    train_texts = read_texts(args.train_file, args.text_column, args.max_train_texts, every=args.train_every)
    result = probe(model, tokenizer, texts, train_texts, args.chunk_length, args.mask_fraction, args.seed)
    print(
        f"{args.model}: {result['masked_tokens']} masked tokens in {result['chunks']} chunks of {args.chunk_length}; "
        f"masked-token loss as written {result['as_written']:.3f}, words shuffled {result['words_shuffled']:.3f}, "
        f"unigram frequencies {result['unigram']:.3f} (nats)"
    )
    return result


if __name__ == "__main__":
    main()

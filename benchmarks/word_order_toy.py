"""How long a masked-LM encoder takes to learn word order, by the length of its chunks: a toy of 26 letters.

Each chunk runs through the letters in order from a random one ("q r s ... z a b ..."), and 15 % of them are masked.
Order gives every masked letter away (it follows its left neighbour); the bag of letters gives nothing, since a
chunk of 26 letters or more holds them all. A model first sits at the loss of a uniform guess (ln 26 = 3.26 nats),
then, once its attention has found the neighbouring positions, falls to 0. The script counts the steps until the
mean loss of the last 50 falls under 1.5, for several chunk lengths at the same number of letters a step: a tiny
pre-LN model of this package (d_model 32, 2 layers, 4 heads), Adam at 3e-3, two seeds.

    python -m benchmarks.word_order_toy            # about 2 minutes on 2 cores

What it showed (benchmarks/QUALITY.md): the plateau lasts longer the longer the chunks, about in proportion: at the
start, attention spreads over every position, so the signal that points it at the neighbour is diluted by the
chunk's length.
"""

import argparse

import torch
import torch.nn.functional as F

from hf_scratch_transformer import ScratchTransformerConfig, ScratchTransformerForConditionalGeneration

FIRST_LETTER, MASK_ID = 10, 3  # ids 10..35 are the letters; 3 is <mask> (below 10: never a letter)


def letters(count: int, length: int) -> torch.Tensor:
    """(count, length) ids, each row the alphabet in order from a random letter, round and round."""
    start = torch.randint(0, 26, (count, 1))
    return (start + torch.arange(length)) % 26 + FIRST_LETTER


def train_on_letters(length: int, seed: int, steps: int, stop_when_learned: bool = True, letters_per_step: int = 1024):
    """Train a new tiny model on the letters; return it and the step at which the mean loss of the last 50 steps
    first fell under 1.5 nats (None if it did not within `steps`)."""
    torch.manual_seed(seed)
    config = ScratchTransformerConfig(
        vocab_size=99, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=512,
        dropout=0.0, normalize_before=True,
    )  # fmt: skip
    model = ScratchTransformerForConditionalGeneration(config)
    encoder, lm_head = model.get_encoder(), model.get_output_embeddings()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses, learned_at = [], None
    for step in range(1, steps + 1):
        ids = letters(letters_per_step // length, length)
        masked = torch.rand(ids.shape) < 0.15
        states = encoder(input_ids=ids.masked_fill(masked, MASK_ID)).last_hidden_state  # (B, S, D)
        loss = F.cross_entropy(lm_head(states[masked]), ids[masked])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if learned_at is None and step >= 50 and sum(losses[-50:]) / 50 < 1.5:
            learned_at = step
            if stop_when_learned:
                break
    return model.eval(), learned_at


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="32,64,128,256", help="chunk lengths, comma-separated")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2500, help="give up after this many steps")
    args = parser.parse_args(argv)
    results = {}
    for length in (int(length) for length in args.lengths.split(",")):
        results[length] = [train_on_letters(length, seed, args.steps)[1] for seed in range(args.seeds)]
        found = ", ".join(str(steps) if steps else f"more than {args.steps}" for steps in results[length])
        print(f"chunks of {length:4d}: word order learned after {found} steps", flush=True)
    return results


if __name__ == "__main__":
    main()

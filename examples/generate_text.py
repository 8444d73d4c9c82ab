"""Stream text from the language model that ships with tinyrnn, token by token.

    python examples/generate_text.py "The " -n 300 --temperature 0.7 --seed 1

Each piece is printed the moment it is sampled. The model (a character-level LSTM trained on
the Python documentation topics, see examples/train_char_lm.py) is inside the package, so
nothing is downloaded. Pass --model to use another .trnn text model.
"""

from __future__ import annotations

import argparse
import sys
import time

import tinyrnn


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description="Stream text from a tinyrnn language model.")
    p.add_argument("prompt", nargs="?", default="The ")
    p.add_argument("-n", type=int, default=300, help="characters to generate")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", help="a .trnn text model (default: the shipped one)")
    args = p.parse_args(argv)

    model = tinyrnn.load(args.model) if args.model else tinyrnn.default_model()
    meta = model.metadata
    print(f"model: {meta.get('name', args.model)}, {model.num_params():,} parameters, {model.dtype}; "
          f"validation {meta.get('valid_bits_per_char', '?')} bits/char", file=sys.stderr)

    sys.stdout.write(args.prompt)
    pieces = []
    start = time.perf_counter()
    for piece in tinyrnn.generate(model, args.prompt, max_tokens=args.n, temperature=args.temperature,
                                  top_p=args.top_p, seed=args.seed):
        sys.stdout.write(piece)
        sys.stdout.flush()  # show each character as soon as it exists
        pieces.append(piece)
    seconds = time.perf_counter() - start
    print(f"\n[{len(pieces)} characters in {seconds:.2f} s, including the first call's compile or cache load]",
          file=sys.stderr)
    return "".join(pieces)


if __name__ == "__main__":
    main()

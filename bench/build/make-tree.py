#!/usr/bin/env python3
"""Write bench/build.sh's source tree: DIRS x FILES files, about TOTAL MiB in all.

The tree is the same on every run and every machine: the content comes from a
seeded generator (random.Random, whose int-seeded stream is stable across Python 3
versions), and every file and directory gets the same mtime. Most files are
text-like (source code, CSV data, logs); about one in six is random bytes or its
base64, so a gzip of the whole tree compresses about as much as a real one does.

Usage: make-tree.py OUT_DIR [--dirs 60] [--files 60] [--total-mib 50] [--seed 5]
"""
import argparse
import base64
import os
import random

MTIME = 1_700_000_000  # fixed, so the tree's metadata is the same on every run

KEYWORDS = ["fn", "let", "mut", "pub", "struct", "impl", "match", "if", "else",
            "return", "for", "in", "while", "use", "mod", "enum", "trait", "where",
            "self", "Self", "Some", "None", "Ok", "Err", "async", "await", "const"]
TYPES = ["u8", "u32", "u64", "usize", "i64", "String", "Vec<u8>", "Option<String>",
         "Result<(), Error>", "&str", "bool", "PathBuf", "Arc<Mutex<State>>"]
PUNCT = ["(", ")", "{", "}", ";", ",", ".", "::", "->", "=>", "=", "==", "&", "?", "+"]


def vocabulary(rng, n):
    syll = ["ab", "ac", "al", "an", "ar", "as", "be", "ca", "ch", "co", "de", "di",
            "el", "en", "er", "ex", "fi", "ge", "ha", "in", "io", "is", "la", "le",
            "li", "lo", "ma", "me", "mi", "na", "ne", "no", "on", "or", "pa", "pe",
            "po", "ra", "re", "ri", "ro", "sa", "se", "si", "st", "ta", "te", "ti",
            "to", "tr", "un", "ur", "va", "ve", "wr", "xi", "yo", "ze"]
    words = set()
    while len(words) < n:
        words.add("".join(rng.choice(syll) for _ in range(rng.randint(1, 4))))
    return sorted(words)


class Words:
    """A vocabulary drawn with Zipf-like frequencies, as words in real text are."""

    def __init__(self, rng, n):
        self.rng = rng
        self.words = vocabulary(rng, n)
        acc, self.cum = 0.0, []
        for rank in range(1, n + 1):
            acc += 1.0 / rank
            self.cum.append(acc)

    def one(self):
        return self.rng.choices(self.words, cum_weights=self.cum)[0]

    def some(self, k):
        return self.rng.choices(self.words, cum_weights=self.cum, k=k)


def code_line(rng, words):
    indent = "    " * rng.choice([0, 1, 1, 2, 2, 2, 3, 3, 4])
    kind = rng.random()
    if kind < 0.08:
        return ""
    if kind < 0.20:
        return indent + "// " + " ".join(words.some(rng.randint(3, 12)))
    if kind < 0.35:
        name = "_".join(words.some(rng.randint(1, 3)))
        return f"{indent}let {name}: {rng.choice(TYPES)} = {words.one()}({words.one()}, {rng.randint(0, 4096)});"
    if kind < 0.45:
        name = "_".join(words.some(2))
        args = ", ".join(f"{words.one()}: {rng.choice(TYPES)}" for _ in range(rng.randint(0, 3)))
        return f"{indent}pub fn {name}({args}) -> {rng.choice(TYPES)} {{"
    toks = []
    for _ in range(rng.randint(3, 14)):
        r = rng.random()
        toks.append(rng.choice(KEYWORDS) if r < 0.25 else rng.choice(PUNCT) if r < 0.5 else words.one())
    return indent + " ".join(toks)


def data_line(rng, words, row):
    return ",".join([str(row), words.one(), words.one(),
                     str(rng.randint(0, 10**6)), f"{rng.random() * 1000:.3f}",
                     rng.choice(["ok", "ok", "ok", "warn", "error"])])


def log_line(rng, words, row):
    return (f"2026-11-{1 + row % 28:02d}T{row % 24:02d}:{row % 60:02d}:{(row * 7) % 60:02d}Z "
            f"{rng.choice(['INFO', 'INFO', 'INFO', 'DEBUG', 'WARN', 'ERROR'])} "
            f"{words.one()}::{words.one()}: "
            + " ".join(words.some(rng.randint(2, 9)))
            + f" id={rng.getrandbits(32):08x}")


def text(rng, pool, size):
    out, n = [], 0
    while n < size:
        line = rng.choice(pool)
        out.append(line)
        n += len(line) + 1
    return ("\n".join(out) + "\n").encode()[:size]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--dirs", type=int, default=60)
    ap.add_argument("--files", type=int, default=60)
    ap.add_argument("--total-mib", type=float, default=50)
    ap.add_argument("--seed", type=int, default=5)
    a = ap.parse_args()

    rng = random.Random(a.seed)
    words = Words(rng, 2000)
    pools = {
        "rs": [code_line(rng, words) for _ in range(3000)],
        "csv": [data_line(rng, words, i) for i in range(8000)],
        "log": [log_line(rng, words, i) for i in range(8000)],
    }
    n = a.dirs * a.files
    kinds = rng.choices(["rs", "csv", "log", "bin", "b64"], weights=[62, 13, 13, 8, 4], k=n)
    weights = [rng.lognormvariate(0, 0.9) for _ in range(n)]
    total = int(a.total_mib * 1048576)
    scale = total / sum(weights)
    sizes = [max(64, int(w * scale)) for w in weights]

    os.makedirs(a.out, exist_ok=True)
    dirs = []
    for i in range(n):
        d = os.path.join(a.out, f"mod{i // a.files:02d}")
        if i % a.files == 0:
            os.makedirs(d, exist_ok=True)
            dirs.append(d)
        kind, size = kinds[i], sizes[i]
        if kind == "bin":
            data = rng.randbytes(size)
        elif kind == "b64":
            data = base64.encodebytes(rng.randbytes(size * 3 // 4 + 3))[:size]
        else:
            data = text(rng, pools[kind], size)
        path = os.path.join(d, f"file{i % a.files:02d}.{kind}")
        with open(path, "wb") as f:
            f.write(data)
        os.utime(path, (MTIME, MTIME))
    for d in dirs + [a.out]:
        os.utime(d, (MTIME, MTIME))


if __name__ == "__main__":
    main()

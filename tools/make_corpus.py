#!/usr/bin/env python3
"""Build the offline bank corpus: real English sentences, one per line.

Sources (both reachable offline through package registries):
  * Debian `wordnet-base` (/usr/share/wordnet/data.{noun,verb,adj,adv}):
    every gloss (definition) and every quoted usage example;
  * PyPI `clip-interrogator` (data/flavors.txt): ~100k short visual phrases,
    with person names and NSFW terms dropped.

Names are dropped with WordNet itself: a word whose every noun sense is an
*instance* (``@i`` pointer: people, places, works) and that has no sense of
another part of speech is treated as a proper name; a phrase with a word that
WordNet does not know at all (artist names, brands, typos) is dropped too, as
is any phrase containing a full name from clip-interrogator's artists.txt.

Output is deduplicated (case-insensitive), shuffled with a fixed seed (so any
prefix is a representative slice) and written as UTF-8, one sentence a line.

Usage: tools/make_corpus.py OUT.txt [--wordnet DIR] [--flavors FILE]
Stdlib only, so it runs without the reference venv.
"""

import argparse
import glob
import os
import random
import re
import subprocess
import sys
import tempfile
import zipfile

WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")

# Function words and tokens that are fine in phrases though WordNet lacks them.
STOP = set(
    """a an the and or but of in on at to for with without from by as into onto over under
    above below behind between through during before after near off up down out about across
    against along among around beside besides beyond inside outside within is are was were be
    been being it its it's this that these those there their they them he she his her him i you
    your we our my me not no very so too than then while which who whom whose what when where
    why how all any both each few more most other some such only own same can will just one two
    three four five six seven eight nine ten 's""".split()
)

# Terms that make a phrase unsuitable for an educational demo.
NSFW = set(
    """nude nudity naked nsfw porn porno pornographic sex sexy sexual erotic erotica hentai
    fetish bdsm topless bottomless lingerie bra panties underwear breasts breast boobs boob
    nipple nipples genitals penis vagina butt buttocks ass thong bikini seductive sensual
    provocative orgasm stripper strip gore gory bloody blood corpse decapitated dismembered
    mutilated torture suicide drug drugs cocaine heroin nazi swastika racist slur""".split()
)


def wordnet_sentences(wn_dir):
    """Glosses and quoted usage examples from WordNet's data files."""
    out = []
    for pos in ("noun", "verb", "adj", "adv"):
        path = os.path.join(wn_dir, f"data.{pos}")
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or "|" not in line:
                    continue  # licence header
                gloss = line.split("|", 1)[1].strip()
                examples = re.findall(r'"([^"]+)"', gloss)
                definition = re.sub(r'"[^"]*"', "", gloss)
                for part in definition.split(";"):
                    part = part.strip(" ;,.")
                    # "- Anthony Trollope": the attribution of a quoted example, not a sentence
                    if len(part.split()) >= 3 and not part.startswith("-"):
                        out.append(part)
                for ex in examples:
                    ex = ex.strip()
                    if len(ex.split()) >= 3:
                        out.append(ex)
    return out


def wordnet_lexicon(wn_dir):
    """(known words, proper-name-only words) from WordNet's data files."""
    known, instance_only, common = set(), set(), set()
    for pos in ("noun", "verb", "adj", "adv"):
        with open(os.path.join(wn_dir, f"data.{pos}"), encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  "):
                    continue
                fields = line.split("|", 1)[0].split()
                if len(fields) < 4:
                    continue
                n_words = int(fields[3], 16)
                words = [fields[4 + 2 * i].lower() for i in range(n_words)]
                is_instance = " @i " in line
                for w in words:
                    w = re.sub(r"\(.*\)$", "", w)
                    for piece in w.split("_"):
                        known.add(piece)
                        if pos == "noun" and is_instance:
                            instance_only.add(piece)
                        else:
                            common.add(piece)
        exc = os.path.join(wn_dir, f"{pos[:3] if pos != 'adj' else 'adj'}.exc")
        if os.path.exists(exc):
            with open(exc, encoding="utf-8", errors="replace") as f:
                for line in f:
                    for w in line.split():
                        known.update(w.lower().split("_"))
                        common.update(w.lower().split("_"))
    return known, instance_only - common


def fetch_clip_interrogator():
    """Download clip-interrogator's wheel with pip (PyPI) and return its data dir."""
    tmp = tempfile.mkdtemp(prefix="clip-interrogator-")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "clip-interrogator==0.6.0", "-d", tmp],
        check=True,
    )
    whl = glob.glob(os.path.join(tmp, "*.whl"))[0]
    with zipfile.ZipFile(whl) as z:
        z.extractall(tmp, [n for n in z.namelist() if n.startswith("clip_interrogator/data/")])
    return os.path.join(tmp, "clip_interrogator", "data")


def clean_flavors(flavors, artists, known, names):
    kept, dropped = [], {"name": 0, "unknown": 0, "nsfw": 0}
    artist_names = {" ".join(WORD.findall(a.lower())) for a in artists if len(a.strip()) > 3}

    def has_artist(words):
        return any(
            " ".join(words[i : i + n]) in artist_names for n in (1, 2, 3, 4) for i in range(len(words) - n + 1)
        )

    for phrase in flavors:
        p = phrase.strip().lower()
        if not p:
            continue
        words = WORD.findall(p)
        # drop debris such as "- h 6 4 0": a phrase must start with a letter and carry a real word
        if not words or not p[0].isalpha() or not any(len(w) >= 3 for w in words):
            continue
        if any(w in NSFW for w in words):
            dropped["nsfw"] += 1
            continue
        if " by " in f" {p} " or has_artist(words) or any(w in names for w in words):
            dropped["name"] += 1
            continue
        if any(w not in known and w not in STOP for w in words):
            dropped["unknown"] += 1
            continue
        kept.append(p)
    return kept, dropped


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--wordnet", default="/usr/share/wordnet")
    ap.add_argument("--flavors-dir", default=None, help="clip-interrogator data dir (default: pip download)")
    ap.add_argument("--seed", type=int, default=20260)
    args = ap.parse_args()

    if not os.path.exists(os.path.join(args.wordnet, "data.noun")):
        sys.exit(f"WordNet not found in {args.wordnet}: apt-get install wordnet-base")
    wn = wordnet_sentences(args.wordnet)
    known, names = wordnet_lexicon(args.wordnet)

    data = args.flavors_dir or fetch_clip_interrogator()
    with open(os.path.join(data, "flavors.txt"), encoding="utf-8") as f:
        flavors = f.read().splitlines()
    with open(os.path.join(data, "artists.txt"), encoding="utf-8") as f:
        artists = f.read().splitlines()
    fl, dropped = clean_flavors(flavors, artists, known, names)

    seen, corpus = set(), []
    for s in wn + fl:
        s = " ".join(s.split())
        key = s.lower()
        if s and key not in seen and all(w not in NSFW for w in WORD.findall(key)):
            seen.add(key)
            corpus.append(s)
    random.Random(args.seed).shuffle(corpus)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        for s in corpus:
            f.write(s + "\n")
    print(
        f"wordnet sentences: {len(wn)}; flavors kept {len(fl)} of {len(flavors)} "
        f"(dropped: {dropped}); corpus after dedup: {len(corpus)} -> {args.out}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()

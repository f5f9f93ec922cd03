"""Install WordNet as NLTK data offline, from Debian's `wordnet-base` and `wordnet-sense-index` packages (METEOR's
synonym stage reads it): the files are copied (NLTK 3.10 refuses a symlinked corpus) into
`<nltk_data>/corpora/wordnet/`, with the `lexnames` file Debian does not ship (the 45 lexicographer files of the
lexnames(5WN) manual page). Nothing is downloaded.

    python -m recipes.metrics.wordnet_data --nltk_data .venv/nltk_data
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

DEBIAN_WORDNET = Path("/usr/share/wordnet")
#: The files of NLTK's `wordnet` corpus that Debian's packages hold (`index.sense` from `wordnet-sense-index`).
WORDNET_FILES = (
    "adj.exc", "adv.exc", "cntlist.rev", "data.adj", "data.adv", "data.noun", "data.verb", "index.adj", "index.adv",
    "index.noun", "index.sense", "index.verb", "noun.exc", "verb.exc",
)  # fmt: skip
#: lexnames(5WN): number, lexicographer file, syntactic category (1 noun, 2 verb, 3 adjective, 4 adverb).
LEXNAMES = (
    "adj.all 3", "adj.pert 3", "adv.all 4", "noun.Tops 1", "noun.act 1", "noun.animal 1", "noun.artifact 1",
    "noun.attribute 1", "noun.body 1", "noun.cognition 1", "noun.communication 1", "noun.event 1", "noun.feeling 1",
    "noun.food 1", "noun.group 1", "noun.location 1", "noun.motive 1", "noun.object 1", "noun.person 1",
    "noun.phenomenon 1", "noun.plant 1", "noun.possession 1", "noun.process 1", "noun.quantity 1",
    "noun.relation 1", "noun.shape 1", "noun.state 1", "noun.substance 1", "noun.time 1", "verb.body 2",
    "verb.change 2", "verb.cognition 2", "verb.communication 2", "verb.competition 2", "verb.consumption 2",
    "verb.contact 2", "verb.creation 2", "verb.emotion 2", "verb.motion 2", "verb.perception 2",
    "verb.possession 2", "verb.social 2", "verb.stative 2", "verb.weather 2", "adj.ppl 3",
)  # fmt: skip


def lexnames_text() -> str:
    return "".join(f"{i:02d}\t{entry.replace(' ', chr(9))}\n" for i, entry in enumerate(LEXNAMES))


def install_wordnet(nltk_data: str | Path, source: str | Path = DEBIAN_WORDNET) -> Path:
    """Copy WordNet into `nltk_data/corpora/wordnet` (a no-op when it is complete). Returns that folder."""
    source, target = Path(source), Path(nltk_data) / "corpora" / "wordnet"
    missing = [name for name in WORDNET_FILES if not (source / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"WordNet files {missing} are not in {source}. Install them with "
            "`apt-get install -y --no-install-recommends wordnet-base wordnet-sense-index`."
        )
    target.mkdir(parents=True, exist_ok=True)
    for name in WORDNET_FILES:
        destination = target / name
        if not destination.is_file() or destination.stat().st_size != (source / name).stat().st_size:
            shutil.copyfile(source / name, destination)  # a copy, never a link
    (target / "lexnames").write_text(lexnames_text(), encoding="utf-8")
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nltk_data", default=str(Path(sys.prefix) / "nltk_data"), help="NLTK data folder.")
    parser.add_argument("--source", default=str(DEBIAN_WORDNET), help="Folder of the Debian WordNet files.")
    args = parser.parse_args(argv)
    print(f"WordNet in {install_wordnet(args.nltk_data, args.source)}")


if __name__ == "__main__":
    main()

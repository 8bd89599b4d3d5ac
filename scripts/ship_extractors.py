"""Train the FD/KID feature extractors that ship with the package (digits, mnist5k, shapes; 32 px, one channel).

    python scripts/ship_extractors.py                      # writes xai_train/metrics/extractors/*.safetensors + .json
    python scripts/ship_extractors.py --datasets mnist5k   # only that one
    python scripts/ship_extractors.py --check              # retrains and compares with the shipped weights

``mnist5k``'s extractor trains on its 4,000-image train split only (``build_dataset``'s default split), so the
1,000 held-out images its FD/KID compare against are unseen by it.

Training is deterministic (one thread, seeded; ``xai_train.metrics.train_classifier``), so on the CPU the files
were made on (its model is in each JSON) a retrain gives the same bits. The shipped files are the reference:
another CPU may round differently, and then ``--check`` says so, and every machine still uses the shipped ones.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xai_train.data import build_dataset  # noqa: E402
from xai_train.metrics import ClassifierRecipe  # noqa: E402
from xai_train.metrics.extractor import save_extractor, shipped_paths, trained_extractor  # noqa: E402

SHIPPED = (("digits", 32, 1), ("mnist5k", 32, 1), ("shapes", 32, 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="retrain and compare with the shipped weights")
    parser.add_argument("--datasets", nargs="+", choices=[name for name, _, _ in SHIPPED], help="default: all")
    args = parser.parse_args()
    mismatches = 0
    for dataset, image_size, channels in SHIPPED:
        if args.datasets and dataset not in args.datasets:
            continue
        data = build_dataset(dataset, image_size=image_size, channels=channels)
        classifier, metadata = trained_extractor(
            dataset, data.images, data.labels, ClassifierRecipe(), data.num_classes
        )
        weights, meta_path = shipped_paths(dataset, image_size, channels)
        line = f"{metadata['name']}: held-out accuracy {metadata['accuracy']:.4f}, {metadata['train_time_s']:.1f} s"
        if args.check:
            shipped = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
            same = shipped.get("sha256") == metadata["sha256"]
            mismatches += not same
            print(f"{line}; shipped {shipped.get('name')}: {'same weights' if same else 'DIFFERENT weights'}")
        else:
            save_extractor(classifier, metadata, weights, meta_path)
            print(f"{line} -> {weights}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())

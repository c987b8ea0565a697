"""A copy of a trained model that segments as a shipped one: the same weights, another name and postprocessing.

    python scripts/as_shipped.py MODELS_DIR MODEL COPY POSTPROCESSING_JSON
MODELS_DIR/MODEL-1.0.0 is copied to MODELS_DIR/COPY-1.0.0 (used by scripts/train_builtin_models.sh and the
benchmark scripts under docs/benchmarks/)."""
import json
import shutil
import sys

models, model, name, postprocessing = sys.argv[1:]
copy = f"{models}/{name}-1.0.0"
shutil.copytree(f"{models}/{model}-1.0.0", copy, dirs_exist_ok=True)
meta = json.load(open(f"{copy}/model.json"))
meta["name"], meta["postprocessing"] = name, json.loads(postprocessing)
json.dump(meta, open(f"{copy}/model.json", "w"), indent=1)

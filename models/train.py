"""Trains the models the Predictor serves and writes them to the model repository.

    scripts/train-models.sh            # one command: venv with pinned packages, then this file

For each model it writes models/<name>/<version>/model.onnx and metadata.json (tensors,
labels, sample input, metrics, sha256) — for iris_svc also outlier.onnx (a One-Class SVM) and
training_data.csv (its training split, profiled at push for drift reports) — and models/<name>/aliases.json ("production" points at
the version written). A second version of iris_svc (another C, other probabilities) goes to
test/fixtures/models/ for the deployment tests. Before writing a model it checks that onnxruntime
reproduces scikit-learn's probabilities on the whole iris set; a mismatch aborts.

Models (the seeds' iris pattern, with a fixed random seed so a rerun gives the same numbers):
  iris_svc             Pipeline(StandardScaler, SVC(probability=True)), 3 classes.
  iris_svc_<species>   the same pipeline as a one-vs-rest binary classifier; its output
                       probabilities are [P(<species>), P(rest)], as in the seeds.
Then the tensor and image models of models/train_tensor_models.py (a regressor, a model with a
string input, an 8x8 digits image classifier), and the held-out digits for the tests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import train_tensor_models
import onnxruntime as ort
import skl2onnx
import sklearn
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, OneClassSVM

RANDOM_SEED = 42
TEST_SIZE = 0.3
# Opsets onnxruntime-node 1.30 loads; pinned so a newer skl2onnx cannot raise them silently.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
PROBABILITY_TOLERANCE = 1e-4
SPECIES = ["setosa", "versicolor", "virginica"]
FEATURE_NAMES = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]
# One row of each species from the iris set: the sample input PredictSample classifies.
SAMPLE_INPUT = [[5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 4.2, 1.5], [6.3, 3.3, 6.0, 2.5]]
# The outlier model beside iris_svc (the seed's iris_sklearn_outlier): a One-Class SVM on the
# standardised training features. nu and gamma chosen so that 0.7 % of the iris rows fall
# outside (its decision function < 0) while rows beyond the measured ranges do.
OUTLIER_NU = 0.02
OUTLIER_GAMMA = 0.05


def make_pipeline(c: float = 1.0) -> Pipeline:
    return Pipeline(
        [
            ("scaler", StandardScaler()),
            ("svc", SVC(C=c, probability=True, random_state=RANDOM_SEED)),
        ]
    )


def export(pipeline: Pipeline, x: np.ndarray) -> bytes:
    """ONNX with probabilities as a float32 [N, C] tensor (no ZipMap: onnxruntime-node cannot load it)."""
    onnx_model = to_onnx(
        pipeline,
        x[:1].astype(np.float32),
        options={id(pipeline.named_steps["svc"]): {"zipmap": False}},
        target_opset=TARGET_OPSET,
        final_types=None,
    )
    # Name the graph's tensors for the metadata: input, label, probabilities.
    onnx_model.graph.input[0].name = rename(onnx_model, onnx_model.graph.input[0].name, "input")
    # skl2onnx collects opsets in a set, whose order follows Python's per-process hash seed:
    # sort them so the same training gives the same bytes.
    opsets = sorted((o.domain, o.version) for o in onnx_model.opset_import)
    del onnx_model.opset_import[:]
    for domain, version in opsets:
        onnx_model.opset_import.add(domain=domain, version=version)
    return onnx_model.SerializeToString()


def rename(onnx_model, old: str, new: str) -> str:
    for node in onnx_model.graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
    return new


def check_onnx(pipeline: Pipeline, onnx_bytes: bytes, x: np.ndarray) -> None:
    """Aborts unless onnxruntime's probabilities match scikit-learn's on every row."""
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    if outputs != ["label", "probabilities"]:
        raise SystemExit(f"unexpected ONNX outputs {outputs}")
    onnx_probabilities = session.run(["probabilities"], {"input": x.astype(np.float32)})[0]
    sklearn_probabilities = pipeline.predict_proba(x)
    worst = float(np.max(np.abs(onnx_probabilities - sklearn_probabilities)))
    if worst > PROBABILITY_TOLERANCE:
        raise SystemExit(f"onnxruntime differs from scikit-learn by {worst:.2e} (> {PROBABILITY_TOLERANCE})")
    print(f"  onnxruntime matches scikit-learn: max |dP| = {worst:.2e} over {len(x)} rows")


def algorithm(pipeline: Pipeline) -> str:
    c = pipeline.named_steps["svc"].C
    return f"Pipeline(StandardScaler, SVC(kernel='rbf',{'' if c == 1.0 else f' C={c},'} probability=True))"


def accuracy(pipeline: Pipeline, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of the most probable class, which is the label the Predictor returns."""
    predicted = np.argmax(pipeline.predict_proba(x), axis=1)
    return float(np.mean(predicted == y))


def export_outlier_model(x_train: np.ndarray) -> bytes:
    """outlier.onnx: float32 [N, 4] in; "scores" (the decision function, < 0 outside) out."""
    detector = Pipeline([("scaler", StandardScaler()), ("ocsvm", OneClassSVM(nu=OUTLIER_NU, gamma=OUTLIER_GAMMA))]).fit(x_train)
    onnx_model = to_onnx(detector, x_train[:1].astype(np.float32), target_opset=TARGET_OPSET)
    opsets = sorted((o.domain, o.version) for o in onnx_model.opset_import)
    del onnx_model.opset_import[:]
    for domain, version in opsets:
        onnx_model.opset_import.add(domain=domain, version=version)
    onnx_bytes = onnx_model.SerializeToString()
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    x_all = load_iris().data
    scores = session.run(["scores"], {session.get_inputs()[0].name: x_all.astype(np.float32)})[0].ravel()
    worst = float(np.max(np.abs(scores - detector.decision_function(x_all))))
    if worst > PROBABILITY_TOLERANCE:
        raise SystemExit(f"outlier model: onnxruntime differs from scikit-learn by {worst:.2e}")
    print(f"  outlier model: {np.mean(scores < 0):.3f} of the iris rows outside; onnxruntime matches (max |d| = {worst:.2e})")
    return onnx_bytes


def write_training_data(folder: Path, x: np.ndarray, y: np.ndarray, labels: list[str]) -> None:
    """training_data.csv: the training split, from which `mlmesh models push` computes the reference profile."""
    lines = [",".join(FEATURE_NAMES + ["label"])]
    lines += [",".join([repr(float(v)) for v in row] + [labels[int(t)]]) for row, t in zip(x, y)]
    (folder / "training_data.csv").write_text("\n".join(lines) + "\n")


def write_model(root: Path, name: str, version: int, description: str, labels: list[str],
                pipeline: Pipeline, splits: dict[str, tuple[np.ndarray, np.ndarray]], production: bool = True,
                companions: bool = False) -> None:
    x_all = np.concatenate([splits["train"][0], splits["test"][0]])
    onnx_bytes = export(pipeline, x_all)
    print(f"{name} v{version}")
    check_onnx(pipeline, onnx_bytes, x_all)
    folder = root / name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(onnx_bytes)
    metrics = {f"{split}_accuracy": round(accuracy(pipeline, x, y), 6) for split, (x, y) in splits.items()}
    y_all = np.concatenate([splits["train"][1], splits["test"][1]])
    metrics["iris_accuracy"] = round(accuracy(pipeline, x_all, y_all), 6)
    metadata = {
        "name": name,
        "version": version,
        "description": description,
        "input": {"name": "input", "dtype": "float32", "shape": [-1, len(FEATURE_NAMES)]},
        "outputs": [
            {"name": "label", "dtype": "int64", "shape": [-1]},
            {"name": "probabilities", "dtype": "float32", "shape": [-1, len(labels)]},
        ],
        "probability_output": "probabilities",
        "feature_names": FEATURE_NAMES,
        "labels": labels,
        "sample_input": SAMPLE_INPUT,
        "metrics": metrics,
        "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        "training": {
            "algorithm": algorithm(pipeline),
            "dataset": "iris (scikit-learn bundled copy), stratified 70/30 split",
            "random_seed": RANDOM_SEED,
            "scikit_learn": sklearn.__version__,
            "skl2onnx": skl2onnx.__version__,
            "onnxruntime": ort.__version__,
            "opset": TARGET_OPSET,
        },
    }
    (folder / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    if companions:
        (folder / "outlier.onnx").write_bytes(export_outlier_model(splits["train"][0]))
        write_training_data(folder, *splits["train"], labels)
    # The repository's aliases: "production" names the version a registry-less Predictor serves
    # for name@production, and the version `mlmesh up` registers first.
    if production:
        (root / name / "aliases.json").write_text(json.dumps({"production": version}, indent=2) + "\n")
    print(f"  wrote {folder}: {metrics}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="model repository")
    parser.add_argument("--version", type=int, default=1, help="version folder to write")
    parser.add_argument("--variants-out", type=Path,
                        default=Path(__file__).resolve().parent.parent / "test" / "fixtures" / "models",
                        help="where to write iris_svc version 2 (C=0.25: other probabilities), pushed by the tests")
    parser.add_argument("--dataset-out", type=Path,
                        default=Path(__file__).resolve().parent.parent / "test" / "fixtures" / "iris.json",
                        help="where to write the iris set the tests classify through the mesh")
    parser.add_argument("--tensor-fixtures-out", type=Path,
                        default=Path(__file__).resolve().parent.parent / "test" / "fixtures" / "tensor-models.json",
                        help="where to write the tensor models' fixed inputs and answers, and the held-out digits")
    args = parser.parse_args()

    iris = load_iris()
    x, y = iris.data, iris.target
    args.dataset_out.parent.mkdir(parents=True, exist_ok=True)
    args.dataset_out.write_text(json.dumps({
        "source": "scikit-learn load_iris()",
        "feature_names": FEATURE_NAMES,
        "labels": SPECIES,
        "rows": [{"values": [float(v) for v in row], "label": SPECIES[int(t)]} for row, t in zip(x, y)],
    }) + "\n")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_SIZE, random_state=RANDOM_SEED, stratify=y
    )

    multiclass = make_pipeline().fit(x_train, y_train)
    write_model(args.out, "iris_svc", args.version,
                "Iris species from sepal and petal measurements (3 classes)", SPECIES, multiclass,
                {"train": (x_train, y_train), "test": (x_test, y_test)}, companions=True)

    # A second version of iris_svc, for the deployment tests: a softer margin (C=0.25) gives
    # other probabilities for the same rows, so a response shows which version answered.
    variant = make_pipeline(c=0.25).fit(x_train, y_train)
    write_model(args.variants_out, "iris_svc", 2,
                "Iris species from sepal and petal measurements (3 classes), softer margin (C=0.25)", SPECIES,
                variant, {"train": (x_train, y_train), "test": (x_test, y_test)}, production=False)

    for index, species in enumerate(SPECIES):
        # Class 0 is the target, so probabilities come out as [P(target), P(rest)].
        to_binary = lambda labels: np.where(labels == index, 0, 1)  # noqa: E731
        binary = make_pipeline().fit(x_train, to_binary(y_train))
        write_model(args.out, f"iris_svc_{species}", args.version,
                    f"Is it {species}? One-vs-rest: probabilities are [P({species}), P(rest)]",
                    [species, f"not_{species}"], binary,
                    {"train": (x_train, to_binary(y_train)), "test": (x_test, to_binary(y_test))})

    train_tensor_models.train_all(args.out, args.variants_out, args.tensor_fixtures_out)


if __name__ == "__main__":
    main()

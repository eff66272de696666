"""Trains the tensor and image models that prove the Predictor serves any ONNX graph.

    scripts/train-models.sh            # runs models/train.py, which trains these after the iris models
    python models/train_tensor_models.py --resnet50-out DIR   # ResNet-50 with random weights only

Every dataset ships inside scikit-learn (no download); seeds are fixed, so a rerun writes the
same bytes. Before writing a model, onnxruntime must reproduce scikit-learn's answers on every
row; a mismatch aborts.

Models written to the model repository (models/<name>/1/, "production" -> 1):
  diabetes_regressor   Pipeline(StandardScaler, Ridge) on the diabetes set: float32 [N, 10] in,
                       float32 [N, 1] disease progression out. No metadata.json: its signature
                       comes from the graph alone.
  diabetes_high_risk   a classifier with two inputs, one of them strings: "sex" as the dataset
                       records it ("1" or "2", one-hot encoded in the graph) and nine float32
                       measurements; label int64 and probabilities float32 [N, 2] out.
  digits_image         LogisticRegression on the 8x8 digits set, as an image model: float32
                       [N, 1, 8, 8] in (0 background .. 1 ink), label and probabilities over
                       "0".."9" out; its metadata.json declares the preprocessing that turns an
                       encoded image into that tensor. Its accuracy on the held-out digits is
                       printed and written to metadata.json.
For the tests: all_dtypes (test/fixtures/models/: one [N, 3] input of every element type, each
echoed), and test/fixtures/tensor-models.json (--tensor-fixtures-out of models/train.py): fixed
inputs with scikit-learn's answers, and the held-out digits.

ResNet-50 with random weights (--resnet50-out, not committed: about 100 MB): the architecture
of He et al. 2015 (torchvision's layout) built with onnx.helper, weights drawn from a fixed
seed. Pretrained weights cannot be downloaded here; this model's answers mean nothing and it is
for throughput only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import skl2onnx
import sklearn
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_diabetes, load_digits
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

RANDOM_SEED = 42
TEST_SIZE = 0.25
# Opsets onnxruntime-node 1.30 loads; pinned so a newer skl2onnx cannot raise them silently.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
TOLERANCE = 1e-4
DIGIT_LABELS = [str(d) for d in range(10)]


def canonical(model: onnx.ModelProto) -> bytes:
    """The model's bytes with its opsets sorted (skl2onnx's order follows Python's hash seed)."""
    opsets = sorted((o.domain, o.version) for o in model.opset_import)
    del model.opset_import[:]
    for domain, version in opsets:
        model.opset_import.add(domain=domain, version=version)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def rename_input(model: onnx.ModelProto, old: str, new: str) -> None:
    for graph_input in model.graph.input:
        if graph_input.name == old:
            graph_input.name = new
    for node in model.graph.node:
        node.input[:] = [new if name == old else name for name in node.input]


def rename_output(model: onnx.ModelProto, old: str, new: str) -> None:
    for graph_output in model.graph.output:
        if graph_output.name == old:
            graph_output.name = new
    for node in model.graph.node:
        node.output[:] = [new if name == old else name for name in node.output]


def worst_difference(expected: np.ndarray, actual: np.ndarray, what: str) -> float:
    worst = float(np.max(np.abs(np.asarray(expected, dtype=np.float64) - np.asarray(actual, dtype=np.float64))))
    if worst > TOLERANCE:
        raise SystemExit(f"{what}: onnxruntime differs from scikit-learn by {worst:.2e} (> {TOLERANCE})")
    return worst


# What the tests check each model against (test/fixtures/tensor-models.json): fixed inputs and
# scikit-learn's answers for them, and the held-out digits.
FIXTURES: dict = {}


def write(root: Path, name: str, onnx_bytes: bytes, metadata: dict | None) -> None:
    folder = root / name / "1"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(onnx_bytes)
    if metadata is not None:
        metadata = {"name": name, "version": 1, **metadata, "sha256": hashlib.sha256(onnx_bytes).hexdigest(), "training": training_info()}
        (folder / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    (root / name / "aliases.json").write_text(json.dumps({"production": 1}, indent=2) + "\n")
    print(f"  wrote {folder} ({len(onnx_bytes)} bytes)")


def training_info() -> dict:
    return {
        "random_seed": RANDOM_SEED,
        "scikit_learn": sklearn.__version__,
        "skl2onnx": skl2onnx.__version__,
        "onnxruntime": ort.__version__,
        "opset": TARGET_OPSET,
    }


def diabetes_regressor(root: Path) -> None:
    print("diabetes_regressor v1")
    data = load_diabetes()
    x_train, x_test, y_train, y_test = train_test_split(data.data, data.target, test_size=TEST_SIZE, random_state=RANDOM_SEED)
    pipeline = Pipeline([("scaler", StandardScaler()), ("ridge", Ridge(alpha=1.0))]).fit(x_train, y_train)
    model = to_onnx(pipeline, x_train[:1].astype(np.float32), target_opset=TARGET_OPSET)
    rename_input(model, model.graph.input[0].name, "measurements")
    rename_output(model, model.graph.output[0].name, "progression")
    onnx_bytes = canonical(model)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    x_all = data.data.astype(np.float32)
    predicted = session.run(["progression"], {"measurements": x_all})[0]
    # float32 arithmetic against float64: compare relative to the target's scale (25..346).
    worst = float(np.max(np.abs(predicted[:, 0] - pipeline.predict(data.data)))) / 346
    if worst > TOLERANCE:
        raise SystemExit(f"diabetes_regressor: onnxruntime differs from scikit-learn by {worst:.2e} of the range")
    r2 = pipeline.score(x_test, y_test)
    print(f"  onnxruntime matches scikit-learn: max |d| / range = {worst:.2e}; held-out R^2 = {r2:.4f}")
    write(root, "diabetes_regressor", onnx_bytes, None)
    FIXTURES["diabetes_regressor"] = {
        "measurements": [[round(float(v), 8) for v in row] for row in x_test[:5]],
        "progression": [round(float(v), 4) for v in pipeline.predict(x_test[:5].astype(np.float32).astype(np.float64))],
        "r2": round(r2, 6),
    }


def diabetes_high_risk(root: Path) -> None:
    print("diabetes_high_risk v1")
    data = load_diabetes(scaled=False)
    sex_column = list(data.feature_names).index("sex")
    sex = np.array([[str(int(v))] for v in data.data[:, sex_column]], dtype=object)
    measurements = np.delete(data.data, sex_column, axis=1).astype(np.float32)
    measurement_names = [n for n in data.feature_names if n != "sex"]
    high = (data.target > np.median(data.target)).astype(np.int64)
    # One frame-like input per column group: skl2onnx names the graph's inputs after them.
    x = {"sex": sex, "measurements": measurements}
    indices = np.arange(len(high))
    train, test = train_test_split(indices, test_size=TEST_SIZE, random_state=RANDOM_SEED, stratify=high)

    def columns(rows: np.ndarray) -> np.ndarray:
        return np.concatenate([x["sex"][rows], x["measurements"][rows].astype(object)], axis=1)

    pipeline = Pipeline(
        [
            ("columns", ColumnTransformer([("sex", OneHotEncoder(handle_unknown="ignore"), [0]), ("measurements", StandardScaler(), list(range(1, 10)))])),
            ("classifier", LogisticRegression(max_iter=1000, random_state=RANDOM_SEED)),
        ]
    ).fit(columns(train), high[train])
    model = to_onnx(
        pipeline,
        initial_types=[("sex", StringTensorType([None, 1])), ("measurements", FloatTensorType([None, 9]))],
        options={id(pipeline.named_steps["classifier"]): {"zipmap": False}},
        target_opset=TARGET_OPSET,
    )
    onnx_bytes = canonical(model)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    if outputs != ["label", "probabilities"]:
        raise SystemExit(f"unexpected ONNX outputs {outputs}")
    probabilities = session.run(["probabilities"], {"sex": x["sex"].astype(str), "measurements": x["measurements"]})[0]
    worst = worst_difference(pipeline.predict_proba(columns(indices)), probabilities, "diabetes_high_risk")
    accuracy = float(np.mean(pipeline.predict(columns(test)) == high[test]))
    print(f"  onnxruntime matches scikit-learn: max |dP| = {worst:.2e}; held-out accuracy = {accuracy:.4f}")
    FIXTURES["diabetes_high_risk"] = {
        "sex": [str(v[0]) for v in x["sex"][test[:5]]],
        "measurements": [[float(v) for v in row] for row in x["measurements"][test[:5]]],
        "label": [int(v) for v in pipeline.predict(columns(test[:5]))],
        "probabilities": [[round(float(p), 5) for p in row] for row in pipeline.predict_proba(columns(test[:5]))],
    }
    write(
        root,
        "diabetes_high_risk",
        onnx_bytes,
        {
            "description": "Is the disease progression a year later above the median? From sex (as the dataset records it: \"1\" or \"2\") and nine measurements",
            "labels": ["low", "high"],
            "inputs_doc": {"sex": "\"1\" or \"2\", as scikit-learn's diabetes set records it", "measurements": measurement_names},
            "metrics": {"test_accuracy": round(accuracy, 6)},
        },
    )


def digits_image(root: Path) -> None:
    print("digits_image v1")
    digits = load_digits()
    pixels = digits.data / 16.0  # 0 background .. 1 ink, as an image's grey levels scaled by 1/255 are
    x_train, x_test, y_train, y_test = train_test_split(pixels, digits.target, test_size=TEST_SIZE, random_state=RANDOM_SEED, stratify=digits.target)
    classifier = LogisticRegression(max_iter=2000, random_state=RANDOM_SEED).fit(x_train, y_train)
    flat = to_onnx(classifier, x_train[:1].astype(np.float32), options={id(classifier): {"zipmap": False}}, target_opset=TARGET_OPSET)
    # An image in: [N, 1, 8, 8] reshaped to the [N, 64] pixels the classifier was trained on.
    flat_input = flat.graph.input[0].name
    graph = flat.graph
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 1, 8, 8])
    shape = numpy_helper.from_array(np.array([-1, 64], dtype=np.int64), name="flat_shape")
    graph.initializer.append(shape)
    graph.node.insert(0, helper.make_node("Reshape", ["image", "flat_shape"], [flat_input], name="image_to_pixels"))
    del graph.input[:]
    graph.input.append(image)
    onnx_bytes = canonical(flat)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    images = pixels.reshape(-1, 1, 8, 8).astype(np.float32)
    probabilities = session.run(["probabilities"], {"image": images})[0]
    worst = worst_difference(classifier.predict_proba(pixels), probabilities, "digits_image")
    accuracy = float(np.mean(classifier.predict(x_test) == y_test))
    print(f"  onnxruntime matches scikit-learn: max |dP| = {worst:.2e}; held-out accuracy = {accuracy:.4f}")
    write(
        root,
        "digits_image",
        onnx_bytes,
        {
            "description": "Handwritten digit 0-9 from an 8x8 grey image (scikit-learn's digits set; light ink on a dark background)",
            "labels": DIGIT_LABELS,
            "metrics": {"test_accuracy": round(accuracy, 6)},
            "preprocessing": {
                "input": "image",
                "color": "grayscale",
                "resize": {"width": 8, "height": 8, "fit": "fill"},
                "scale": 1 / 255,
                "mean": [0.0],
                "std": [1.0],
                "layout": "NCHW",
            },
        },
    )
    # The held-out digits, as the dataset's grey levels (0..16), for the tests.
    _, test_images, _, test_labels = train_test_split(digits.data, digits.target, test_size=TEST_SIZE, random_state=RANDOM_SEED, stratify=digits.target)
    FIXTURES["digits_image"] = {
        "source": "scikit-learn load_digits(), the held-out quarter digits_image was not trained on",
        "levels": 16,
        "accuracy": round(accuracy, 6),
        "images": [{"pixels": [int(v) for v in row], "label": str(int(t))} for row, t in zip(test_images, test_labels)],
    }


def all_dtypes(root: Path) -> None:
    """A test model echoing one [N, 3] input of every element type the Predictor serves (Identity)."""
    types = {
        "float16": TensorProto.FLOAT16, "float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE,
        "int8": TensorProto.INT8, "int16": TensorProto.INT16, "int32": TensorProto.INT32, "int64": TensorProto.INT64,
        "uint8": TensorProto.UINT8, "uint16": TensorProto.UINT16, "uint32": TensorProto.UINT32, "uint64": TensorProto.UINT64,
        "bool": TensorProto.BOOL, "string": TensorProto.STRING,
    }
    graph = helper.make_graph(
        [helper.make_node("Identity", [f"x_{name}"], [f"y_{name}"], name=f"echo_{name}") for name in types],
        "all_dtypes",
        [helper.make_tensor_value_info(f"x_{name}", t, ["N", 3]) for name, t in types.items()],
        [helper.make_tensor_value_info(f"y_{name}", t, ["N", 3]) for name, t in types.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="mlmesh models/train_tensor_models.py")
    model.ir_version = 8
    folder = root / "all_dtypes" / "1"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(canonical(model))
    print(f"all_dtypes v1 (test model): wrote {folder}")


def resnet50(out: Path) -> None:
    """ResNet-50 v1.5 (stride on the 3x3 convolution) with random weights, BatchNorm kept."""
    rng = np.random.default_rng(RANDOM_SEED)
    nodes: list = []
    initializers: list = []
    counter = {"n": 0}

    def fresh(prefix: str) -> str:
        counter["n"] += 1
        return f"{prefix}_{counter['n']}"

    def weight(name: str, array: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(array.astype(np.float32), name=name))
        return name

    def conv_bn(x: str, cin: int, cout: int, kernel: int, stride: int, relu: bool) -> str:
        name = fresh("conv")
        fan_in = cin * kernel * kernel
        w = weight(f"{name}.w", rng.standard_normal((cout, cin, kernel, kernel), dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in)))
        y = f"{name}.y"
        nodes.append(helper.make_node("Conv", [x, w], [y], name=name, kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[kernel // 2] * 4))
        bn = f"{name}.bn"
        scale = weight(f"{bn}.scale", np.ones(cout))
        bias = weight(f"{bn}.bias", np.zeros(cout))
        mean = weight(f"{bn}.mean", np.zeros(cout))
        var = weight(f"{bn}.var", np.ones(cout))
        z = f"{bn}.y"
        nodes.append(helper.make_node("BatchNormalization", [y, scale, bias, mean, var], [z], name=bn, epsilon=1e-5))
        if not relu:
            return z
        r = f"{name}.relu"
        nodes.append(helper.make_node("Relu", [z], [r], name=r))
        return r

    x = conv_bn("input", 3, 64, 7, 2, True)
    pooled = "stem.pool"
    nodes.append(helper.make_node("MaxPool", [x], [pooled], name=pooled, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    x = pooled
    cin = 64
    for blocks, width, stride in [(3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2)]:
        for block in range(blocks):
            s = stride if block == 0 else 1
            cout = width * 4
            y = conv_bn(x, cin, width, 1, 1, True)
            y = conv_bn(y, width, width, 3, s, True)
            y = conv_bn(y, width, cout, 1, 1, False)
            shortcut = conv_bn(x, cin, cout, 1, s, False) if block == 0 else x
            added = fresh("add")
            nodes.append(helper.make_node("Add", [y, shortcut], [added], name=added))
            x = fresh("relu")
            nodes.append(helper.make_node("Relu", [added], [x], name=x))
            cin = cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"], name="head.pool"))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], name="head.flatten", axis=1))
    fc_w = weight("fc.w", rng.standard_normal((1000, 2048), dtype=np.float32) * np.float32(np.sqrt(1.0 / 2048)))
    fc_b = weight("fc.b", np.zeros(1000))
    nodes.append(helper.make_node("Gemm", ["features", fc_w, fc_b], ["logits"], name="head.fc", transB=1))
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], name="head.softmax", axis=1))
    graph = helper.make_graph(
        nodes,
        "resnet50_random",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 1000])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="mlmesh models/train_tensor_models.py")
    model.ir_version = 8
    onnx_bytes = canonical(model)
    folder = out / "resnet50" / "1"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(onnx_bytes)
    metadata = {
        "name": "resnet50",
        "version": 1,
        "description": "ResNet-50 architecture with RANDOM weights (no pretrained weights can be downloaded here): for throughput only, its labels mean nothing",
        "labels": [f"class_{i}" for i in range(1000)],
        "preprocessing": {
            "input": "input",
            "color": "rgb",
            "resize": {"shorter_side": 256},
            "center_crop": {"width": 224, "height": 224},
            "scale": 1 / 255,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "layout": "NCHW",
        },
        "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        "training": {"weights": f"random, numpy default_rng({RANDOM_SEED})", "onnx": onnx.__version__},
    }
    (folder / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    (out / "resnet50" / "aliases.json").write_text(json.dumps({"production": 1}, indent=2) + "\n")
    print(f"resnet50 v1 (random weights): wrote {folder} ({len(onnx_bytes) / 1e6:.1f} MB)")


def train_all(out: Path, test_models_out: Path, fixtures_out: Path) -> None:
    """The committed tensor and image models (models/train.py calls this after the iris models)."""
    diabetes_regressor(out)
    diabetes_high_risk(out)
    digits_image(out)
    all_dtypes(test_models_out)
    fixtures_out.parent.mkdir(parents=True, exist_ok=True)
    fixtures_out.write_text(json.dumps(FIXTURES) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resnet50-out", type=Path, required=True, help="model repository to write ResNet-50 (random weights) to")
    resnet50(parser.parse_args().resnet50_out)


if __name__ == "__main__":
    main()

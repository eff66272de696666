"""tritonclient (gRPC and HTTP) against Predictors serving tensor models: the regressor, the model
with a string input, the digits image model (tensors, and PNG files as a BYTES input) and, on a
second Predictor, all_dtypes (one input of every element type, echoed). Prints one JSON object;
test/tensor-models.test.ts checks it against test/fixtures/tensor-models.json.

    .tools/venv-clients/bin/python test/python/tensor_model_checks.py MODELS_ADDRESS ALL_DTYPES_ADDRESS \
        test/fixtures/tensor-models.json DIGIT_PNGS_JSON
"""
import base64
import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

models_url, dtypes_url, fixtures_path, pngs_path = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
fixtures = json.load(open(fixtures_path))
# The held-out digits as PNG files (made by the test with sharp): [{"png": base64, "label": "3"}, ...]
pngs = json.load(open(pngs_path))

DTYPES = {
    "float16": ("FP16", np.float16), "float32": ("FP32", np.float32), "float64": ("FP64", np.float64),
    "int8": ("INT8", np.int8), "int16": ("INT16", np.int16), "int32": ("INT32", np.int32), "int64": ("INT64", np.int64),
    "uint8": ("UINT8", np.uint8), "uint16": ("UINT16", np.uint16), "uint32": ("UINT32", np.uint32), "uint64": ("UINT64", np.uint64),
    "bool": ("BOOL", np.bool_), "string": ("BYTES", np.object_),
}


def sample(name, json_numbers=False):
    """Two rows of three elements at the edges of each type's range (JSON: 64-bit ints within 2^53)."""
    if name == "string":
        return np.array([[b"", b"abc", "\u00e9t\u00e9".encode()], [b"x" * 300, b"line\nbreak", b"z"]], dtype=np.object_)
    if name == "bool":
        return np.array([[True, False, True], [False, False, True]])
    kind = np.dtype(DTYPES[name][1])
    if kind.kind == "f":
        return np.array([[0.5, -1.25, 3.0], [65504.0 if name == "float16" else 1e30, -0.0, 1.5]], dtype=kind)
    info = np.iinfo(kind)
    if json_numbers and kind.itemsize == 8:
        low, high = (0 if kind.kind == "u" else -(2**53 - 1)), 2**53 - 1
        return np.array([[low, high, 0], [1, high - 1, low + 1]], dtype=kind)
    return np.array([[info.min, info.max, 0], [1, info.max - 1, info.min + 1]], dtype=kind)


def run(module, binary):
    client = module.InferenceServerClient(models_url)
    kw = {"binary_data": binary} if module is httpclient else {}

    def tensor(name, array, datatype):
        t = module.InferInput(name, list(array.shape), datatype)
        t.set_data_from_numpy(array, **kw)
        return t

    def outputs(*names):
        return [module.InferRequestedOutput(n, **kw) for n in names]

    out = {}
    reg = fixtures["diabetes_regressor"]
    result = client.infer("diabetes_regressor", [tensor("measurements", np.array(reg["measurements"], dtype=np.float32), "FP32")], outputs=outputs("progression"))
    out["regressor"] = [float(v) for v in result.as_numpy("progression")[:, 0]]

    risk = fixtures["diabetes_high_risk"]
    sex = np.array([[s.encode()] for s in risk["sex"]], dtype=np.object_)
    result = client.infer(
        "diabetes_high_risk",
        [tensor("sex", sex, "BYTES"), tensor("measurements", np.array(risk["measurements"], dtype=np.float32), "FP32")],
        outputs=outputs("label", "probabilities"),
    )
    out["high_risk"] = {"label": [int(v) for v in result.as_numpy("label")], "probabilities": result.as_numpy("probabilities").round(5).tolist()}

    digits = fixtures["digits_image"]
    images = np.array([d["pixels"] for d in digits["images"]], dtype=np.float32).reshape(-1, 1, 8, 8) / digits["levels"]
    result = client.infer("digits_image", [tensor("image", images, "FP32")], outputs=outputs("label"))
    predicted = result.as_numpy("label")
    out["digits_accuracy"] = float(np.mean([str(p) == d["label"] for p, d in zip(predicted, digits["images"])]))

    # The same digits as PNG files: the Predictor decodes and preprocesses them (64 per request).
    correct = 0
    for start in range(0, len(pngs), 64):
        batch = pngs[start:start + 64]
        files = np.array([base64.b64decode(p["png"]) for p in batch], dtype=np.object_)
        # tritonclient puts BYTES in JSON only as UTF-8 text: files go as binary data over HTTP.
        images = module.InferInput("image", [len(batch)], "BYTES")
        images.set_data_from_numpy(files, **({"binary_data": True} if module is httpclient else {}))
        labels = client.infer("digits_image", [images], outputs=outputs("label")).as_numpy("label")
        correct += sum(str(l) == p["label"] for l, p in zip(labels, batch))
    out["digits_png_accuracy"] = correct / len(pngs)

    metadata = client.get_model_metadata("diabetes_high_risk", **({"as_json": True} if module is grpcclient else {}))
    out["high_risk_inputs"] = [[i["name"], i["datatype"]] for i in metadata["inputs"]]

    # all_dtypes takes its 13 inputs together and echoes each.
    dtypes = module.InferenceServerClient(dtypes_url)
    inputs, requested = [], []
    json_numbers = module is httpclient and not binary
    for name, (datatype, _) in DTYPES.items():
        # FP16 has no JSON form in tritonclient: binary over HTTP whatever the run.
        fp16_kw = {"binary_data": True} if module is httpclient and name == "float16" else kw
        t = module.InferInput(f"x_{name}", [2, 3], datatype)
        t.set_data_from_numpy(sample(name, json_numbers), **fp16_kw)
        inputs.append(t)
        requested.append(module.InferRequestedOutput(f"y_{name}", **fp16_kw))
    echo = dtypes.infer("all_dtypes", inputs, outputs=requested)
    echoed = {}
    for name in DTYPES:
        got = echo.as_numpy(f"y_{name}")
        if name == "string":
            got = np.array([[v if isinstance(v, bytes) else str(v).encode() for v in row] for row in got], dtype=np.object_)
        echoed[name] = bool(got.shape == (2, 3) and np.array_equal(got, sample(name, json_numbers)))
    out["echo"] = echoed

    def error_of(call):
        try:
            call()
        except InferenceServerException as e:
            return {"status": str(e.status()), "message": e.message()}
        return None

    out["errors"] = {
        "wrong_dtype": error_of(lambda: client.infer("diabetes_regressor", [tensor("measurements", np.zeros((1, 10), dtype=np.float64), "FP64")])),
        "wrong_layout": error_of(lambda: client.infer("digits_image", [tensor("image", np.zeros((1, 8, 8, 1), dtype=np.float32), "FP32")])),
        "missing_input": error_of(lambda: client.infer("diabetes_high_risk", [tensor("sex", sex, "BYTES")])),
    }
    return out


print(json.dumps({"grpc": run(grpcclient, True), "http": run(httpclient, False), "http_binary": run(httpclient, True)}))

"""A minimal MLServer runtime for bench/oip.ts: serves the same ONNX classifier as the mlmesh
Predictor with onnxruntime (one intra-op thread, inference in the server process), answering
ModelInfer with the FP32 probabilities. Not part of mlmesh; the peer it is measured against."""
import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxClassifier(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(await get_model_uri(self._settings), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        features = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        probabilities = self._session.run(["probabilities"], {self._input: features})[0]
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("probabilities", probabilities)])

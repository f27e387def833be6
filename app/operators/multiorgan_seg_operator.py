"""Multi-organ inference: the SDK's MonaiSegInferenceOperator with the BTCV/UNETR pre- and post-transforms."""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Hashable, Mapping

import numpy as np
import torch
from app_config import HU_WINDOW, ROI_SIZE, SW_BATCH_SIZE, SW_OVERLAP, TARGET_SPACING_MM, label_names
from input_checks import AppInputError
from label_grid import labels_on_input_grid
from monai.data import DataLoader, Dataset
from monai.deploy.core import ExecutionContext, Image, InputContext, OutputContext
from monai.deploy.operators.monai_seg_inference_operator import InMemImageReader, MonaiSegInferenceOperator
from monai.inferers import sliding_window_inference
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    Orientationd,
    ScaleIntensityRanged,
    Spacingd,
)
from monai.utils import MetaKeys, SpaceKeys
from stages import POST_TRANSFORMS, PRE_TRANSFORMS, stage, window_count, window_label
from volume_geometry import ras_affine_from_metadata

logger = logging.getLogger(__name__)

IMAGE_KEY = "image"
PRED_KEY = "pred"


class RasInMemImageReader(InMemImageReader):
    """The SDK reader, with a correct RAS affine labelled as RAS.

    SDK 0.5.1 hands MONAI the RAS-form affine but labels it LPS, so MONAI >= 1.2's Orientation("RAS")
    would flip x and y; the model must see true RAS, as in training.
    """

    def _get_meta_dict(self, img: Image) -> Dict[str, Any]:
        meta = super()._get_meta_dict(img)
        affine = ras_affine_from_metadata(img.metadata())
        meta[MetaKeys.ORIGINAL_AFFINE] = affine
        meta[MetaKeys.AFFINE] = affine.copy()
        meta[MetaKeys.SPACE] = SpaceKeys.RAS
        return meta


class CheckOutputd(MapTransform):
    """Applies a check to the prediction and passes it on unchanged (a transform that records nothing,
    unlike a Lambdad, which MONAI traces as invertible)."""

    def __init__(self, keys: str, check: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__(keys)
        self.check = check

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        result = dict(data)
        for key in self.key_iterator(result):
            result[key] = self.check(result[key])
        return result


class TimedWindows:
    """The model as sliding_window_inference calls it, each call logged as a stage with its windows."""

    def __init__(self, model: Callable[..., torch.Tensor], windows: int) -> None:
        self.model = model
        self.windows = windows
        self.done = 0

    def __call__(self, batch: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        count = int(batch.shape[0])
        with stage(window_label(self.done + 1, count, self.windows)):
            prediction = self.model(batch, *args, **kwargs)
        self.done += count
        return prediction


class MultiOrganSegOperator(MonaiSegInferenceOperator):
    """Segments the 13 BTCV organs; the output Image is a uint8 label map on the input's (D, H, W) grid.

    Pre: RAS orientation, 1.5 x 1.5 x 2.0 mm spacing (orientation first so the spacing is per R, A, S),
    HU -175..250 -> 0..1 clipped, crop to the body. Sliding 96^3 windows. Post: softmax, argmax, and
    the argmax's nearest voxel for each voxel of the input's grid (label_grid).
    """

    def __init__(self) -> None:
        # None for both transform chains: the base class then calls pre_process/post_process with its reader.
        super().__init__(ROI_SIZE, None, None, overlap=SW_OVERLAP, sw_batch_size=SW_BATCH_SIZE)
        self._model_file = ""
        self.input_dataset_key = IMAGE_KEY
        self.pred_dataset_key = PRED_KEY

    def compute(self, op_input: InputContext, op_output: OutputContext, context: ExecutionContext) -> None:
        """Loads the TorchScript model itself when the SDK did not recognise it.

        The SDK only takes a file for TorchScript if its archive holds data/ (parameters); otherwise it
        hands over a plain Model without a predictor. input_checks already proved the file loads.
        """
        model = context.models.get(self._model_name) if context.models else None
        if model is not None and model.predictor is None:
            model.predictor = torch.jit.load(model.path, map_location="cpu").eval()
        self._model_file = str(model.path) if model is not None else self.MODEL_LOCAL_PATH
        if model is None:
            model = torch.jit.load(self.MODEL_LOCAL_PATH, map_location="cpu").eval()
        self._infer(op_input, op_output, model)

    def _infer(self, op_input: InputContext, op_output: OutputContext, model: Callable[..., Any]) -> None:
        """The SDK's compute (pre-transforms through its Dataset, sliding windows, post-transforms),
        with each part timed as a stage and each window call logged. The argmax goes back to the
        input's grid through label_grid, not MONAI's Invertd (one tie rule on every stack, no 4 GB
        coordinate grid), and is transposed back to D, H, W."""
        input_image = op_input.get("image")
        if not input_image:
            raise ValueError("Input is None.")
        metadata = self._convert_dicom_metadata_datatype(input_image.metadata())
        image_name = str(metadata.get("SeriesInstanceUID", "Img_in_context"))
        pre_transforms = self.pre_process(InMemImageReader(input_image))
        dataset = Dataset(data=[{IMAGE_KEY: image_name}], transform=pre_transforms)
        loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=0)
        with torch.no_grad():
            with stage(PRE_TRANSFORMS):
                images = next(iter(loader))[IMAGE_KEY]
            model_affine = np.asarray(images.affine, dtype=np.float64).reshape(-1, 4, 4)[0]
            # the input's RAS affine, as the reader built it for the pre-transforms (they keep it)
            input_affine = np.asarray(images.meta[MetaKeys.ORIGINAL_AFFINE], dtype=np.float64)
            input_affine = input_affine.reshape(-1, 4, 4)[0]
            windows = window_count(images.shape[2:], ROI_SIZE, SW_OVERLAP)
            size = "x".join(str(n) for n in images.shape[2:])
            logger.info(
                "Model input %s voxels at %s mm: %d windows of %s, %d per call",
                size, TARGET_SPACING_MM, windows, ROI_SIZE, SW_BATCH_SIZE,
            )  # fmt: skip
            logits = sliding_window_inference(
                inputs=images,
                roi_size=ROI_SIZE,
                sw_batch_size=SW_BATCH_SIZE,
                overlap=SW_OVERLAP,
                predictor=TimedWindows(model, windows),
            )
            del images
            with stage(POST_TRANSFORMS):
                model_labels = self.post_process(pre_transforms)({PRED_KEY: logits[0]})[PRED_KEY]
                del logits
                labels = labels_on_input_grid(
                    np.asarray(model_labels.cpu().numpy()[0], dtype=np.uint8),
                    model_affine,
                    input_affine,
                    input_image.asnumpy().shape[::-1],  # the reader's axis order (x, y, z)
                ).T
        op_output.set(Image(labels, metadata), "seg_image")

    def _check_model_output(self, prediction: torch.Tensor) -> torch.Tensor:
        """Stops a model with another contract, whose argmax would otherwise be a silently wrong mask."""
        expected = 1 + len(label_names())
        if prediction.shape[0] != expected:
            raise AppInputError(
                f"model file {self._model_file} returned {prediction.shape[0]} channels, expected {expected} "
                "(background + the organs in config/labels.json); fix: pass -m with the 14-class BTCV model"
            )
        return prediction

    def _convert_dicom_metadata_datatype(self, metadata: Dict) -> Dict:
        """Same conversion as the SDK's, without printing every metadata entry to the log."""
        for key, convert in (
            ("SeriesInstanceUID", str),
            ("row_pixel_spacing", float),
            ("col_pixel_spacing", float),
        ):
            if metadata.get(key) is not None:
                metadata[key] = convert(metadata[key])
        return metadata

    def pre_process(self, data: InMemImageReader, *args: Any, **kwargs: Any) -> Compose:
        reader = RasInMemImageReader(data.input_image)
        low, high = HU_WINDOW
        return Compose(
            [
                LoadImaged(keys=IMAGE_KEY, reader=reader),
                EnsureChannelFirstd(keys=IMAGE_KEY),
                Orientationd(keys=IMAGE_KEY, axcodes="RAS", labels=None),
                Spacingd(keys=IMAGE_KEY, pixdim=TARGET_SPACING_MM, mode="bilinear"),
                ScaleIntensityRanged(keys=IMAGE_KEY, a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True),
                CropForegroundd(keys=IMAGE_KEY, source_key=IMAGE_KEY, allow_smaller=True),
                EnsureTyped(keys=IMAGE_KEY, dtype=np.float32),
            ]
        )

    def post_process(self, data: Compose, *args: Any, **kwargs: Any) -> Compose:
        """On the model's grid: the output checked, softmax, argmax (label_grid takes it back)."""
        return Compose(
            [
                CheckOutputd(keys=PRED_KEY, check=self._check_model_output),
                Activationsd(keys=PRED_KEY, softmax=True),
                AsDiscreted(keys=PRED_KEY, argmax=True),
            ]
        )

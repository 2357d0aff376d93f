"""The shared sidebar: model and image choice, kept across pages in ``st.session_state``."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from PIL import Image

from core.images import EXTENSIONS, MAX_BYTES, ImageError, ModelInput, preprocess, sample_images
from core.model import (CONVNEXT_MODELS, EMBEDDED_NAME, OTHER_CNNS, LensModel, ModelLoadError,
                         default_pretrained_name, list_pretrained_tags)

from ui import cache

DEFAULT_LABEL = "Default: ConvNeXt-Tiny (hub), embedded offline"
CUSTOM_LABEL = "Other timm model..."
WEIGHT_CHOICES = {"hub": "Pretrained (hub)", "random": "Random (untrained)", "file": "Local file"}


@dataclass(frozen=True)
class Selection:
    model: LensModel
    image: Image.Image          # original, RGB
    inp: ModelInput             # as the model sees it
    name: str                   # image name
    image_key: str              # content hash of the image
    model_key: str

    @property
    def key(self) -> str:
        return f"{self.model_key}|{self.image_key}"


def _model_widgets() -> tuple[str | None, str | None]:
    options = [DEFAULT_LABEL, EMBEDDED_NAME, *CONVNEXT_MODELS, *OTHER_CNNS, CUSTOM_LABEL]
    choice = st.selectbox("Model", options, key="lens_model_choice",
                          help="Any timm image classifier. 'embedded' is ImageNet EfficientNet-Lite0 shipped "
                               "in a Python package: it needs no network.")
    if choice == DEFAULT_LABEL:
        return None, None
    if choice == EMBEDDED_NAME:
        return EMBEDDED_NAME, "embedded"
    if choice == CUSTOM_LABEL:
        choice = st.text_input("timm model name", key="lens_model_custom", placeholder="e.g. convnext_tiny.fb_in1k")
        choice = choice.strip() or None
        if choice is None:
            return None, None
    source = st.radio("Weights", list(WEIGHT_CHOICES), format_func=WEIGHT_CHOICES.get, key="lens_weights",
                      horizontal=True)
    if source == "hub" and "." not in choice:
        tags = list_pretrained_tags(choice)
        if tags:
            default_tag = default_pretrained_name(choice)
            choice = st.selectbox("Pretrained tag", tags, key=f"lens_tag_{choice}",
                                  index=tags.index(default_tag) if default_tag in tags else 0,
                                  help="timm's pretrained weights for this architecture (dataset, resolution).")
    if source != "file":
        return choice, source
    upload = st.file_uploader("Weights file (.safetensors preferred)", type=["safetensors", "pth", "pt", "bin"],
                              key="lens_weights_file")
    if upload is None:
        st.caption("Upload a weights file to use it; pretrained hub weights until then.")
        return choice, "hub"
    folder = Path(tempfile.gettempdir()) / "convnext-lens-weights"
    folder.mkdir(exist_ok=True)
    data = upload.getvalue()
    path = folder / f"{cache.content_key(data)}{Path(upload.name).suffix.lower()}"
    if not path.exists():
        path.write_bytes(data)
    return choice, str(path)


def _load_model(name, weights) -> LensModel | None:
    try:
        with st.spinner("Loading the model (first time only)..."):
            model = cache.get_model(name, weights)
    except ModelLoadError as e:
        st.error(f"Model not loaded: {e}")
        return None
    st.session_state["lens_last_model"] = (name, weights)
    return model


def _class_names(model: LensModel) -> LensModel:
    """The optional class-names upload (one per line, or a JSON list); a bad file keeps the model's own names."""
    from core.model.labels import LabelsError, parse_labels

    upload = st.file_uploader("Class names (optional)", type=["txt", "json"], key="lens_labels_file",
                              help="Your own class names, one per line or a JSON list, one per output of the head. "
                                   "Weights files that carry names (label_names) need none.")
    if upload is None:
        return model
    try:
        labels = parse_labels(upload.getvalue(), upload.name)
        return cache.labelled_model(model, cache.model_key(model), tuple(labels))
    except LabelsError as e:
        st.error(f"Class names not used: {e}")
        return model


def _image_widgets() -> tuple[bytes, str] | None:
    samples = sample_images()
    source = st.radio("Image", ["Sample photo", "Upload"], key="lens_image_source", horizontal=True)
    if source == "Upload":
        upload = st.file_uploader("Image file", type=[e.lstrip(".") for e in EXTENSIONS], key="lens_upload")
        if upload is not None:
            if upload.size > MAX_BYTES:
                st.error(f"{upload.name}: file is {upload.size / 2**20:.1f} MB, over the "
                         f"{MAX_BYTES / 2**20:.0f} MB limit")
                return None
            return upload.getvalue(), upload.name
        st.caption("No upload yet: showing the sample photo.")
    if not samples:
        st.error("No sample photos found in assets/samples.")
        return None
    names = [p.name for p in samples]
    default = names.index("chelsea.jpg") if "chelsea.jpg" in names else 0
    name = st.selectbox("Sample photo", names, index=default, key="lens_sample")
    path = samples[names.index(name)]
    return path.read_bytes(), name


def render() -> Selection | None:
    """Draw the sidebar and return the current selection (None when nothing usable is chosen yet)."""
    st.session_state.pop("lens_selection", None)
    with st.sidebar:
        st.markdown("### Model")
        name, weights = _model_widgets()
        model = _load_model(name, weights)
        if model is None and st.session_state.get("lens_last_model") not in (None, (name, weights)):
            st.caption("Keeping the previous model.")
            model = _load_model(*st.session_state["lens_last_model"])
        if model is not None:
            model = _class_names(model)
        if model is not None and model.card.notice:
            st.info(model.card.notice)
        st.markdown("### Image")
        picked = _image_widgets()
        image = None
        if picked is not None:
            data, image_name = picked
            try:
                image = cache.decode_image(data, image_name)
                st.session_state["lens_last_image"] = (data, image_name)
            except ImageError as e:
                st.error(str(e))
        if image is None and "lens_last_image" in st.session_state:
            data, image_name = st.session_state["lens_last_image"]
            st.caption(f"Keeping the previous image: {image_name}")
            image = cache.decode_image(data, image_name)
        if model is None or image is None:
            return None
        st.image(image, caption=image_name, width="stretch")
    inp = preprocess(image, model.card.data_config)
    selection = Selection(model, image, inp, image_name, cache.content_key(data), cache.model_key(model))
    st.session_state["lens_selection"] = selection
    return selection


def current() -> Selection | None:
    """The selection made in the sidebar for this run; pages call this. Shows a message when there is none."""
    _leave_pages_directory_mode()
    selection = st.session_state.get("lens_selection")
    if selection is None:
        st.warning("Choose a model and an image in the sidebar.")
    return selection


def _leave_pages_directory_mode() -> None:
    """Rerun through the router when Streamlit ran this page on its own.

    Streamlit starts in its old "pages directory" mode because ``pages/`` exists, and only leaves it when some
    session runs ``st.navigation``. Until then a visitor who opens a page's own URL first (a shared link to a
    freshly started app) gets that page file alone: no sidebar, no router. Leaving the mode and rerunning sends
    the run through ``dashboard.py``, which finds the page from the URL.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without the old mode
        return
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        st.rerun()


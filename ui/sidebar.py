"""The shared sidebar: model and image choice, kept across pages in ``st.session_state``."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import streamlit as st
from PIL import Image

from core.audit.demo import SHORTCUT_HEAD
from core.images import IMAGE_SUFFIXES, MAX_BYTES, ImageError, ModelInput, preprocess, sample_images
from core.model import (CONVNEXT_MODELS, CONVNEXT_V2_MODELS, EMBEDDED_NAME, OTHER_CNNS, TRANSFORMER_MODELS,
                        LensModel, ModelLoadError, default_pretrained_name, list_pretrained_tags)

from ui import cache, permalink, uploads
from ui.uploads import SMALL_UPLOAD_MB
from ui.permalink import Param

# Short enough for the sidebar's selectbox (a longer label was cut off); the help says what the default does.
DEFAULT_LABEL = "ConvNeXt-Tiny (default)"
CUSTOM_LABEL = "Other timm model..."
# The Dataset audit's demo head (two classes, plain and stamped, on the embedded backbone): a choice of its own so
# an image the audit flags opens on the Attribution page with the model the audit explained, and links carry it.
DEMO_HEAD_LABEL = "Watermark demo head"
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


@dataclass(frozen=True)
class ModelKeys:
    """Where one model picker keeps its widgets' values (session-state keys ``<state>_...``) and its link
    parameters (``model<url>``, ``weights<url>``, ...): the sidebar's, or the second model's."""

    state: str = "lens"
    url: str = ""

    def key(self, name: str) -> str:
        return f"{self.state}_{name}"

    def param(self, name: str) -> str:
        return f"{name}{self.url}"


SIDEBAR = ModelKeys()
SECOND = ModelKeys("lens2", "2")
SECOND_ON = "lens2_on"  # the second model's switch


def _model_widgets(keys: ModelKeys = SIDEBAR, label: str = "Model") -> tuple[str | None, str | None]:
    options = [DEFAULT_LABEL, EMBEDDED_NAME, *CONVNEXT_MODELS, *CONVNEXT_V2_MODELS, *TRANSFORMER_MODELS, *OTHER_CNNS,
               CUSTOM_LABEL, DEMO_HEAD_LABEL]
    permalink.bind([Param(keys.param("model"), keys.key("model_choice"), options=options),
                    Param(keys.param("custom"), keys.key("model_custom")),
                    Param(keys.param("weights"), keys.key("weights"), options=list(WEIGHT_CHOICES))])
    choice = st.selectbox(label, options, key=keys.key("model_choice"),
                          help="Any timm image classifier: ConvNeXt (V1, V2), vision transformers (ViT, DeiT, "
                               "EVA-02, BEiT, Swin), CNNs. The default is ConvNeXt-Tiny with ImageNet weights "
                               "from the Hugging Face hub; without a network it falls back to 'embedded', the "
                               "ImageNet EfficientNet-Lite0 shipped in a Python package. The watermark demo head is "
                               "the Dataset audit page's demo model (classes plain and stamped).")
    if choice == DEFAULT_LABEL:
        return None, None
    if choice == EMBEDDED_NAME:
        return EMBEDDED_NAME, "embedded"
    if choice == DEMO_HEAD_LABEL:
        return None, str(SHORTCUT_HEAD)  # as the audit page loads it: one model in the cache, not two
    if choice == CUSTOM_LABEL:
        choice = st.text_input("timm model name", key=keys.key("model_custom"),
                               placeholder="e.g. convnext_tiny.fb_in1k")
        choice = choice.strip() or None
        if choice is None:
            return None, None
    source = st.radio("Weights", list(WEIGHT_CHOICES), format_func=WEIGHT_CHOICES.get, key=keys.key("weights"),
                      horizontal=True)
    if source == "hub" and "." not in choice:
        tags = list_pretrained_tags(choice)
        if tags:
            permalink.bind([Param(keys.param("tag"), keys.key(f"tag_{choice}"), options=tags)])
            default_tag = default_pretrained_name(choice)
            choice = st.selectbox("Pretrained tag", tags, key=keys.key(f"tag_{choice}"),
                                  index=tags.index(default_tag) if default_tag in tags else 0,
                                  help="timm's pretrained weights for this architecture (dataset, resolution).")
    if source != "file":
        return choice, source
    upload = st.file_uploader("Weights file (.safetensors preferred)", type=["safetensors", "pth", "pt", "bin"],
                              key=keys.key("weights_file"), max_upload_size=SMALL_UPLOAD_MB)
    if upload is None:
        st.caption("Upload a weights file to use it; pretrained hub weights until then.")
        return choice, "hub"
    # in the session's upload area: removed with the session's other uploads (LENS_UPLOAD_TTL after its last visit)
    folder = uploads.area() / "weights"
    folder.mkdir(parents=True, exist_ok=True)
    data = upload.getvalue()
    path = folder / f"{cache.content_key(data)}{Path(upload.name).suffix.lower()}"
    if not path.exists():
        path.write_bytes(data)
    return choice, str(path)


def _loaded(name, weights, what: str = "model") -> LensModel | None:
    """The model through the app's cache, with a spinner; None (the reason shown) when it cannot be loaded."""
    try:
        with st.spinner(f"Loading the {what} (first time only)..."):
            return cache.get_model(name, weights)
    except ModelLoadError as e:
        st.error(f"{what[0].upper()}{what[1:]} not loaded: {e}")
        return None


def _load_model(name, weights) -> LensModel | None:
    model = _loaded(name, weights)
    if model is not None:
        st.session_state["lens_last_model"] = (name, weights)
    return model


def _class_names(model: LensModel) -> LensModel:
    """The optional class-names upload (one per line, or a JSON list); a bad file keeps the model's own names."""
    from core.model.labels import LabelsError, parse_labels

    upload = st.file_uploader("Class names (optional)", type=["txt", "json"], key="lens_labels_file",
                              max_upload_size=SMALL_UPLOAD_MB,
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
def model_name(model: LensModel) -> str:
    """How pages name the model on screen: the timm name, and what its weights are."""
    card = model.card
    if card.weights.value == "embedded":
        return "EfficientNet-Lite0 (embedded, ImageNet)"
    kind = {"hub": "pretrained", "random": "random weights", "file": "weights from a file"}[card.weights.value]
    return f"{card.name} ({kind})"


def notice_line(model: LensModel) -> None:
    """The model's notice (e.g. the offline fallback) as one line, with the details on demand."""
    st.info(f"Showing {model_name(model)}: the default model could not be loaded.", icon=":material/cloud_off:")
    with st.expander("Why?"):
        st.caption(model.card.notice)


def _image_widgets() -> tuple[bytes, str] | None:
    samples = sample_images()
    names = [p.name for p in samples]
    linked_upload = st.query_params.get("image") == permalink.UPLOAD and "lens_image_source" not in st.session_state
    permalink.bind([Param("sample", "lens_sample", options=names)])
    source = st.radio("Image", ["Sample photo", "Upload"], key="lens_image_source", horizontal=True)
    if linked_upload:
        st.info("This link was made with an uploaded image, which a link cannot carry: showing the sample photo. "
                "Upload the image again to see the same view.")
    if source == "Upload":
        permalink.publish([], {"image": permalink.UPLOAD})
        upload = st.file_uploader("Image file", type=[e.lstrip(".") for e in IMAGE_SUFFIXES], key="lens_upload",
                                  max_upload_size=SMALL_UPLOAD_MB)
        st.caption("An uploaded image cannot travel in a link: a shared link opens with the sample photo.")
        if upload is not None:
            if upload.size > MAX_BYTES:
                st.error(f"{upload.name}: file is {upload.size / 2**20:.1f} MB, over the "
                         f"{MAX_BYTES / 2**20:.0f} MB limit")
                return None
            return upload.getvalue(), upload.name
        if "lens_last_upload" in st.session_state:
            # The uploader is empty again: the browser drops the previous file as soon as another one is chosen,
            # even when that one is then refused (too large, wrong type). Keep the user's last good upload.
            data, name = st.session_state["lens_last_upload"]
            st.caption(f"Keeping your previous upload: {name}. Choose 'Sample photo' above for the samples.")
            return data, name
        st.caption("No upload yet: showing the sample photo.")
    elif not linked_upload:
        permalink.publish([], {"image": None})
    if not samples:
        st.error("No sample photos found in assets/samples.")
        return None
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
            notice_line(model)
        st.markdown("### Image")
        picked = _image_widgets()
        image = None
        if picked is not None:
            data, image_name = picked
            try:
                image = cache.decode_image(data, image_name)
                st.session_state["lens_last_image"] = (data, image_name)
                if st.session_state.get("lens_image_source") == "Upload":
                    st.session_state["lens_last_upload"] = (data, image_name)
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


def second_model(selection: Selection) -> Selection | None:
    """The "Compare with a second model" picker, drawn where it is called and off by default: the sidebar's model
    choices (names, pretrained tags, random weights, a local file, the default with its offline fallback) for a
    second model, which sees the sidebar's image through its own preprocessing. Loaded through the app's model
    cache (the sidebar's model is not loaded again). None when off or not loadable (the reason is shown)."""
    permalink.bind([Param("compare", SECOND_ON, bool)])
    with st.expander("Compare with a second model", expanded=bool(st.session_state.get(SECOND_ON))):
        if not st.toggle("Show a second model", key=SECOND_ON,
                         help="The method grid and the ranking below show both models on the same image."):
            return None
        name, weights = _model_widgets(SECOND, "Second model")
        model = _loaded(name, weights, "second model")
        if model is None:
            return None
        if model.card.notice:
            st.caption(f"Showing {model_name(model)}: {model.card.notice}")
    inp = preprocess(selection.image, model.card.data_config)
    return replace(selection, model=model, inp=inp, model_key=cache.model_key(model))


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


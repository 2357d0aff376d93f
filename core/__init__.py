"""ConvNeXt Lens core library: models, images, layer catalogue and the interpretability techniques.

No Streamlit here; ``python -m core`` is the command line.
"""

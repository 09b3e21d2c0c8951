"""Pure numpy / dask / OpenSlide logic: nothing here imports napari, qtpy or magicgui."""

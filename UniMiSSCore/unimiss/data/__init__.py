"""Images and labelmaps: one small image type, reading CT volumes and radiographs, labelmaps with names and colours."""
from .errors import InputError
from .image import ImageData
from .io import (atomic_output, check_labelmap_output, colour_table_path, compound_suffix, label_table_path,
                 label_values, read_image, read_labelmap, write_labelmap)
from .labels import Label, find_label_table, name_key

__all__ = ["ImageData", "InputError", "Label", "atomic_output", "check_labelmap_output", "colour_table_path",
           "compound_suffix", "find_label_table", "label_table_path", "label_values", "name_key", "read_image",
           "read_labelmap", "write_labelmap"]

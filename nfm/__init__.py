"""nfm: Hugging Face-native foundation models for cellular-resolution neural population data."""
__version__ = "0.1.0"

"""Loss functions, as function + module pairs (kornia style)."""

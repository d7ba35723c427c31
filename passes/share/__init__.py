"""Weight sharing passes."""

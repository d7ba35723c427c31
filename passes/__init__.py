"""Built-in passes, one per module, grouped by family; installed as edgec.passes."""

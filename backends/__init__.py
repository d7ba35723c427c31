"""Built-in backends, one package each; installed as edgec.backends."""

"""Entry scripts of the textcondense pipeline (each exposes `main(argv=None)`)."""

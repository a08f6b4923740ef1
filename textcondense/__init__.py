"""textcondense: dataset condensation for BERT text classifiers, as a library.

The command-line tool (`textcondense experts|condense|evaluate|distill`, condense/cli.py) runs the
stages; this package is the Python side, for using what they produce in your own code:

    import textcondense as tc
    syn = tc.load_synset("results/condense/bbc/ipc1/demo/distilled_data/syn_data_100.pth")
    ds = tc.to_hf_dataset(syn)          # datasets.Dataset: inputs_embeds, attention_mask, labels
    tc.save_synset_portable(syn, "my_set")          # my_set.safetensors + my_set.json
    tc.export_text(syn, "my_set.jsonl")             # as text, for any tokenizer (exact with --tokens)
    cfg = tc.load_config("demo")        # a shipped config by name, a YAML file or a run's args.log
    data = tc.load_text_dataset(cfg.dataset)        # raw texts, labels and class names of both splits
    tc.export_expert(cfg, 0, "expert0_hf")          # a complete expert as a Hugging Face folder

    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained("expert0_hf")   # same logits

Importing this package registers the project's classifier (`TextCondenseForSequenceClassification`,
model_type 'textcondense_bert') with the transformers Auto classes; without it, load exported
folders with `trust_remote_code=True`.
"""
from __future__ import annotations

__version__ = "0.2.0"

from condense.cli import main as cli  # noqa: E402  (`textcondense ...` as a function: cli(["condense", ...]))
from utils.config import load_config  # noqa: E402
from utils.data import load_text_dataset  # noqa: E402
from utils.hf_export import export_expert, to_hf_classifier  # noqa: E402
from utils.hf_model import (  # noqa: E402
    TextCondenseConfig,
    TextCondenseForSequenceClassification,
    register,
)
from utils.model import resolve_model_path  # noqa: E402
from utils.synset_io import load_synset, save_synset_portable, synset_summary, to_hf_dataset  # noqa: E402
from utils.text_sets import export_text  # noqa: E402

register()

__all__ = ["__version__", "cli", "load_config", "load_text_dataset", "load_synset", "to_hf_dataset",
           "save_synset_portable", "synset_summary", "export_text", "export_expert", "to_hf_classifier",
           "TextCondenseConfig", "TextCondenseForSequenceClassification", "resolve_model_path"]

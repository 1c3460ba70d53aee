"""Item sets that ship with pytest-sway (``default``: the retention battery's prompts, passages,
multiple-choice questions and chat exchanges), readable without pytest running."""

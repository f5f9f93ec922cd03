"""Model cards of the zoo: `template.md` (Jinja, the layout) and `card.py` (the code that fills it from a run folder:
metadata, a `model-index` read from `eval_results.json`, the run's configuration, results beside chance, plots).

```python
>>> from model_cards import write_model_card
>>> write_model_card("outputs/demo")  # writes outputs/demo/README.md
```
"""

from .card import CardError, build_model_card, write_model_card

__all__ = ["CardError", "build_model_card", "write_model_card"]

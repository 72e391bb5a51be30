"""The canonical emotion set and the mapping of model label names onto it.

Models name their classes in many ways ("neu", "Neutral", "happiness"...). They are mapped
**by name** (never by index) onto eight canonical labels, the RAVDESS set the spec uses.
"""

from __future__ import annotations

CANONICAL_LABELS: tuple[str, ...] = (
    "neutral",
    "calm",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgust",
    "surprised",
)

# Labels a corpus that lacks them files under another of its labels. A corpus without calm (CREMA-D)
# files calm voices as neutral: its neutral clips teach "neutral or calm", never "not calm".
COVERED_BY: dict[str, tuple[str, ...]] = {"neutral": ("calm",)}

CHINESE_NAMES: dict[str, str] = {
    "neutral": "中性",
    "calm": "平静",
    "happy": "高兴",
    "sad": "悲伤",
    "angry": "愤怒",
    "fearful": "恐惧",
    "disgust": "厌恶",
    "surprised": "惊讶",
}

# Lower-cased model label names and the canonical label they mean. IEMOCAP's "exc" (excited) is
# merged with happy, as the SUPERB emotion task does.
_ALIASES: dict[str, str] = {
    "neu": "neutral",
    "neutral": "neutral",
    "calm": "calm",
    "hap": "happy",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "exc": "happy",
    "excited": "happy",
    "sad": "sad",
    "sadness": "sad",
    "ang": "angry",
    "angry": "angry",
    "anger": "angry",
    "fea": "fearful",
    "fear": "fearful",
    "fearful": "fearful",
    "dis": "disgust",
    "disgust": "disgust",
    "disgusted": "disgust",
    "sur": "surprised",
    "surprise": "surprised",
    "surprised": "surprised",
}
for _label, _zh in CHINESE_NAMES.items():
    _ALIASES[_zh] = _label


def canonical_label(name: str) -> str | None:
    """Return the canonical label a model's class name means, or None if it has none.

    Args:
        name: A class name as found in a model's ``config.id2label``.
    """
    key = name.strip().lower().replace("-", "_")
    if key in _ALIASES:
        return _ALIASES[key]
    # Names such as "emotion_happy" or "02_angry": try the last word.
    last = key.replace(" ", "_").split("_")[-1]
    return _ALIASES.get(last)


def display_name(label: str, lang: str = "zh") -> str:
    """Return a canonical label as shown to people: Chinese by default, English with ``lang='en'``."""
    return CHINESE_NAMES[label] if lang == "zh" else label

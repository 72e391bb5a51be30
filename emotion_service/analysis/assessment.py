"""Interview assessment v1: from emotion probabilities to a score, a level and advice.

The rules are deliberately simple and written down in the README ("Scoring rules"); every
number they use lives in :class:`AssessmentRules` so they can be changed in one place. Advice is
phrased as an observation with the number behind it, never as a diagnosis (see DELIVERY.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..labels import CANONICAL_LABELS, display_name
from .ensemble import EnsembleResult

EMOTION_TYPES: dict[str, tuple[str, ...]] = {
    "positive": ("happy", "calm"),
    "neutral": ("neutral", "surprised"),
    "negative": ("sad", "angry", "fearful", "disgust"),
}


@dataclass(frozen=True)
class AssessmentRules:
    """Every number the assessment uses.

    Attributes:
        label_scores: Interview score (0–100) of a clip that is certainly this emotion; a clip's
            score is the probability-weighted mean of these.
        high_confidence: Confidence at or above which the level is high (高).
        medium_confidence: Confidence at or above which the level is medium (中); below, low (低).
    """

    label_scores: dict[str, float] = field(
        default_factory=lambda: {
            "happy": 95.0,
            "calm": 90.0,
            "neutral": 80.0,
            "surprised": 70.0,
            "sad": 45.0,
            "fearful": 40.0,
            "disgust": 35.0,
            "angry": 30.0,
        }
    )
    high_confidence: float = 0.6
    medium_confidence: float = 0.4


DEFAULT_RULES = AssessmentRules()

LEVELS = {"high": {"zh": "高", "en": "high"}, "medium": {"zh": "中", "en": "medium"}, "low": {"zh": "低", "en": "low"}}

_ADVICE: dict[str, dict[str, str]] = {
    "happy": {
        "zh": "情感表现积极（{name} {p:.0%}），继续保持",
        "en": "Positive delivery ({name} {p:.0%}); keep it up",
    },
    "calm": {
        "zh": "语气平稳从容（{name} {p:.0%}），保持这种节奏",
        "en": "Steady, composed delivery ({name} {p:.0%}); keep this pace",
    },
    "neutral": {
        "zh": "语气平稳（{name} {p:.0%}）；谈到成就和动机时可以多一些热情，让表达更有感染力",
        "en": "Even tone ({name} {p:.0%}); show more enthusiasm when talking about achievements and motivation",
    },
    "surprised": {
        "zh": "语气起伏较大（{name} {p:.0%}）；回答前可以稍作停顿，整理思路",
        "en": "Large swings in tone ({name} {p:.0%}); a short pause before answering helps to organise your thoughts",
    },
    "sad": {
        "zh": "语气偏低沉（{name} {p:.0%}）；讲到自己的经历和动机时可以提高一些音量和能量",
        "en": "Subdued tone ({name} {p:.0%}); add some energy and volume when describing your experience and motivation",
    },
    "fearful": {
        "zh": "语音中有紧张的迹象（{name} {p:.0%}）；放慢语速、回答前深呼吸并稍作停顿有助于稳定表达",
        "en": "Signs of nervousness ({name} {p:.0%}); slowing down and taking a breath before answering steadies delivery",
    },
    "angry": {
        "zh": "语气听起来比较强硬（{name} {p:.0%}）；注意放缓语速，语调保持平和",
        "en": "The tone sounds forceful ({name} {p:.0%}); slow down and keep the tone even",
    },
    "disgust": {
        "zh": "语气中可能带有否定或不耐烦的意味（{name} {p:.0%}）；谈及过往经历时尽量使用中性、建设性的表述",
        "en": "The tone may sound dismissive ({name} {p:.0%}); describe past experiences in neutral, constructive terms",
    },
}

_TEXTS: dict[str, dict[str, str]] = {
    "low_confidence": {
        "zh": "情感信号不明显（置信度 {p:.0%}），本次结果仅供参考",
        "en": "The emotional signal is weak (confidence {p:.0%}); treat this result as indicative only",
    },
    "disagreement": {
        "zh": "各模型判断不一致（一致率 {p:.0%}），结果仅供参考",
        "en": "The models disagree (agreement {p:.0%}); treat this result as indicative only",
    },
    "session_dominant": {
        "zh": "整场面试以{name}为主（占 {p:.0%} 的时长）",
        "en": "The session was mostly {name} ({p:.0%} of the speaking time)",
    },
    "session_unstable": {
        "zh": "情绪在各段之间变化较多（{n} 次变化，共 {m} 段）；保持一致的语气和节奏会显得更从容",
        "en": "The emotion changed often between segments ({n} changes over {m} segments); a consistent tone and pace comes across as more composed",
    },
    "session_stable": {
        "zh": "各段之间情绪稳定（稳定度 {p:.0%}），表现一致",
        "en": "Emotion was stable across segments (stability {p:.0%})",
    },
    "session_negative": {
        "zh": "第 {segments} 段偏负面（{name}）；可以回顾这些问题，准备更从容的回答",
        "en": "Segments {segments} leaned negative ({name}); review those questions and prepare calmer answers",
    },
}


@dataclass(frozen=True)
class Assessment:
    """The spec's ``interview_assessment``."""

    emotion_type: str  # positive / neutral / negative
    score: float  # 0–100
    confidence_level: str  # high / medium / low (shown as 高/中/低 in Chinese)
    recommendations: list[str]


@dataclass(frozen=True)
class Stability:
    """How steady the candidate's emotion was across a session.

    Attributes:
        score: 1 − mean total-variation distance between consecutive segments' distributions
            (1 = identical distributions throughout; 1 for a single segment).
        dominant_share: Share of speaking time whose top emotion is the dominant one.
        changes: How many times the top emotion changes from one segment to the next.
    """

    score: float
    dominant_share: float
    changes: int


@dataclass(frozen=True)
class SessionSummary:
    """Summary of a batch of segments from one interview session."""

    segments: int
    total_duration: float
    dominant_label: str
    distribution: dict[str, float]
    stability: Stability
    average_score: float
    emotion_type: str
    recommendations: list[str]


def emotion_type(probabilities: dict[str, float]) -> str:
    """The group (positive/neutral/negative) with the most probability mass."""
    return max(EMOTION_TYPES, key=lambda t: sum(probabilities.get(label, 0.0) for label in EMOTION_TYPES[t]))


def emotion_score(probabilities: dict[str, float], rules: AssessmentRules = DEFAULT_RULES) -> float:
    """Probability-weighted mean of the per-emotion interview scores, 0–100."""
    return round(sum(p * rules.label_scores[label] for label, p in probabilities.items()), 1)


def assess(result: EnsembleResult, *, lang: str = "zh", rules: AssessmentRules = DEFAULT_RULES) -> Assessment:
    """Assess one clip from the ensemble's verdict."""
    if result.confidence >= rules.high_confidence and result.consensus:
        level = "high"
    elif result.confidence >= rules.medium_confidence:
        level = "medium"
    else:
        level = "low"
    name = display_name(result.label, lang)
    advice = [_ADVICE[result.label][lang].format(name=name, p=result.confidence)]
    if level == "low":
        advice.append(_TEXTS["low_confidence"][lang].format(p=result.confidence))
    if not result.consensus:
        advice.append(_TEXTS["disagreement"][lang].format(p=result.agreement))
    return Assessment(
        emotion_type=emotion_type(result.probabilities),
        score=emotion_score(result.probabilities, rules),
        confidence_level=level,
        recommendations=advice,
    )


def summarise_session(
    results: Sequence[EnsembleResult],
    durations: Sequence[float],
    *,
    lang: str = "zh",
    rules: AssessmentRules = DEFAULT_RULES,
) -> SessionSummary:
    """Summarise the analysed segments of one session (in order), weighting by duration."""
    if not results or len(results) != len(durations):
        raise ValueError("summarise_session() needs one duration per result, and at least one result")
    total = float(sum(durations))
    distribution = {
        label: sum(r.probabilities[label] * d for r, d in zip(results, durations, strict=True)) / total
        for label in CANONICAL_LABELS
    }
    dominant = max(distribution, key=distribution.__getitem__)
    tops = [r.label for r in results]
    changes = sum(1 for a, b in zip(tops, tops[1:], strict=False) if a != b)
    distances = [
        0.5 * sum(abs(a.probabilities[label] - b.probabilities[label]) for label in CANONICAL_LABELS)
        for a, b in zip(results, results[1:], strict=False)
    ]
    stability = Stability(
        score=1.0 - (sum(distances) / len(distances) if distances else 0.0),
        dominant_share=sum(d for top, d in zip(tops, durations, strict=True) if top == dominant) / total,
        changes=changes,
    )
    scores = [emotion_score(r.probabilities, rules) for r in results]
    average_score = round(sum(s * d for s, d in zip(scores, durations, strict=True)) / total, 1)

    advice = [_TEXTS["session_dominant"][lang].format(name=display_name(dominant, lang), p=stability.dominant_share)]
    if len(results) > 1:
        if changes > (len(results) - 1) / 2:
            advice.append(_TEXTS["session_unstable"][lang].format(n=changes, m=len(results)))
        else:
            advice.append(_TEXTS["session_stable"][lang].format(p=stability.score))
    negative = [i + 1 for i, r in enumerate(results) if emotion_type(r.probabilities) == "negative"]
    if negative:
        names = sorted({display_name(results[i - 1].label, lang) for i in negative})
        sep = "、" if lang == "zh" else ", "
        advice.append(
            _TEXTS["session_negative"][lang].format(segments=sep.join(map(str, negative)), name=sep.join(names))
        )
    advice.append(_ADVICE[dominant][lang].format(name=display_name(dominant, lang), p=distribution[dominant]))
    return SessionSummary(
        segments=len(results),
        total_duration=total,
        dominant_label=dominant,
        distribution=distribution,
        stability=stability,
        average_score=average_score,
        emotion_type=emotion_type(distribution),
        recommendations=advice,
    )

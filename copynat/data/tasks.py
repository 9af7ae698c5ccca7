"""Two small encoder tasks made by the project (seeded, no download): the lecture's other two output kinds.

- `make_tagging_dataset`: a label per token. Ambiguous words ("I saw a saw") are NOUN or VERB by context, so a
  model must look at neighbours (self-attention) rather than the word alone.
- `make_sentiment_dataset`: one label per sequence, with negation ("not good" is negative), so word counting
  fails and the model must combine positions.

`tokenize_and_align_labels` maps word labels onto subword tokens (first piece labelled, the rest -100), the usual
recipe for token classification with a subword tokenizer.
"""

import random

from datasets import Dataset

TAGS = ("DET", "NOUN", "VERB", "PRON", "ADJ", "PUNCT")
# ambiguous word -> (noun reading, verb reading) contexts are built by the templates below
AMBIGUOUS = ("saw", "book", "watch", "fly", "run", "fish", "play", "ring")
NOUN_TEMPLATES = (
    [("I", "PRON"), ("saw", "VERB"), ("a", "DET"), ("{w}", "NOUN"), (".", "PUNCT")],
    [("the", "DET"), ("{adj}", "ADJ"), ("{w}", "NOUN"), ("is", "VERB"), ("here", "ADJ"), (".", "PUNCT")],
    [("she", "PRON"), ("likes", "VERB"), ("the", "DET"), ("{w}", "NOUN"), (".", "PUNCT")],
)
VERB_TEMPLATES = (
    [("I", "PRON"), ("{w}", "VERB"), ("a", "DET"), ("{noun}", "NOUN"), (".", "PUNCT")],
    [("they", "PRON"), ("{w}", "VERB"), ("the", "DET"), ("{adj}", "ADJ"), ("{noun}", "NOUN"), (".", "PUNCT")],
    [("we", "PRON"), ("often", "ADJ"), ("{w}", "VERB"), (".", "PUNCT")],
)
ADJECTIVES = ("old", "red", "big", "small", "new", "quiet", "long", "green")
NOUNS = ("tree", "letter", "song", "car", "river", "house", "dog", "city")

POSITIVE = ("good", "great", "lovely", "excellent", "fun", "wonderful", "nice", "superb")
NEGATIVE = ("bad", "awful", "boring", "terrible", "dull", "poor", "horrible", "weak")
SUBJECTS = ("the film", "this book", "the meal", "our trip", "the show", "that game", "the hotel", "the concert")


def make_tagging_dataset(num_examples: int = 2000, seed: int = 0) -> Dataset:
    """Columns `words` (list[str]) and `tags` (list[int], indices into TAGS)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(num_examples):
        as_noun = rng.random() < 0.5
        template = rng.choice(NOUN_TEMPLATES if as_noun else VERB_TEMPLATES)
        fill = {"w": rng.choice(AMBIGUOUS), "adj": rng.choice(ADJECTIVES), "noun": rng.choice(NOUNS)}
        rows.append({"words": [word.format(**fill) for word, _ in template],
                     "tags": [TAGS.index(tag) for _, tag in template]})
    return Dataset.from_list(rows)


def make_sentiment_dataset(num_examples: int = 2000, seed: int = 0) -> Dataset:
    """Columns `text` (str) and `label` (0 negative, 1 positive); half the sentences negate their adjective."""
    rng = random.Random(seed)
    rows = []
    for _ in range(num_examples):
        positive_word = rng.random() < 0.5
        negated = rng.random() < 0.5
        adjective = rng.choice(POSITIVE if positive_word else NEGATIVE)
        text = f"{rng.choice(SUBJECTS)} was {'not ' if negated else ''}{adjective}."
        rows.append({"text": text[0].upper() + text[1:], "label": int(positive_word != negated)})
    return Dataset.from_list(rows)


def tokenize_and_align_labels(tokenizer, words: list[list[str]], tags: list[list[int]], max_length: int = 128) -> dict:
    """Tokenize pre-split words (joined by spaces) and give each word's tag to its first subword token; other
    pieces and special tokens get -100 so the loss ignores them."""
    encoded = tokenizer([" ".join(sentence) for sentence in words], truncation=True, max_length=max_length,
                        return_offsets_mapping=True)
    labels = []
    for sentence, sentence_tags, offsets in zip(words, tags, encoded["offset_mapping"]):
        starts, position = {}, 0
        for index, word in enumerate(sentence):
            starts[position] = sentence_tags[index]
            position += len(word) + 1
        row = []
        for start, end in offsets:
            # byte-level pieces carry the leading space: a word starts at `start` or `start + 1`
            tag = starts.pop(start, starts.pop(start + 1, None)) if end > start else None
            row.append(-100 if tag is None else tag)
        labels.append(row)
    encoded.pop("offset_mapping")
    encoded["labels"] = labels
    return encoded

"""Sentence translation by retrieval: collections (translation memories), Globetrotter training, evaluation."""

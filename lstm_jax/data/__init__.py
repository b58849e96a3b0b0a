"""Corpora (files, checksums, edition preprocessing), vocabularies and minibatch iterators."""

"""The ground floor (layer 0): errors, numeric helpers, progress bars, the study's vocabulary, configs,
the on-disk contract (collection), safe file opening and Hub names/downloads. Imports nothing else of
interest; everything may import it."""

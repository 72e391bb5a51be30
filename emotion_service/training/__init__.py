"""Training the models: what every trainer shares (:mod:`.common`) and the encoder heads' trainer (:mod:`.encoder`)."""

"""The open_vocab world: diffusers text-to-image models judged by an open-vocabulary detector,
CLIP score and a VLM (atelier.worlds.open_vocab.world.OpenVocabWorld)."""

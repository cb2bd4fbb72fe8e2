"""The vendor's customers and the subject keys their events carry."""

"""learncredits: the credits and billing engine of a training marketplace."""

"""Loaders: decoded patients to batches (grain, tf.data, device-resident), augmentation."""

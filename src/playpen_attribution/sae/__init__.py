"""SAE fingerprints of rows and the attribution predictor: the config sections (`config`), one
forward pass up to block L encoded by an SAELens SAE (`features`), and the ridge regressor that
forecasts attribution from those features without gradients (`predictor`)."""

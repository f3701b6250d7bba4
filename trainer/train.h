/*
 * train.h - `cxrtriage-train train`: the training loop over a data set (dataset.h), with
 * images decoded once through the daemon's own pixel path on loader threads, augmented on
 * the fly on a loader thread while the CNN trains, early stopping on validation macro-F1,
 * a checkpoint every epoch, --resume, and the final model written with its metadata.
 */
#ifndef CXR_TRAIN_H
#define CXR_TRAIN_H

int train_main(int argc, char **argv);

#endif

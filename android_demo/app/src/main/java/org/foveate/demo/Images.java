package org.foveate.demo;

import java.io.File;
import java.io.IOException;
import java.io.InputStream;

import android.content.ContentResolver;
import android.graphics.Bitmap;
import android.graphics.BitmapFactory;
import android.graphics.Matrix;
import android.media.ExifInterface;
import android.net.Uri;

import org.foveate.core.ArgbImage;
import org.foveate.core.GoldenReplay;
import org.foveate.core.ImageException;

/** Pictures to the core's ArgbImage: decoded to ARGB_8888 with straight alpha, EXIF orientation applied. */
final class Images {
    private Images() {
    }

    static ArgbImage fromBitmap(Bitmap bitmap) {
        Bitmap b = bitmap.getConfig() == Bitmap.Config.ARGB_8888 ? bitmap : bitmap.copy(Bitmap.Config.ARGB_8888, false);
        int w = b.getWidth();
        int h = b.getHeight();
        int[] argb = new int[w * h];
        b.getPixels(argb, 0, w, 0, 0, w, h); // colour ints are not premultiplied
        return new ArgbImage(w, h, argb);
    }

    static Bitmap decode(ContentResolver resolver, Uri uri) throws IOException {
        BitmapFactory.Options opts = options();
        Bitmap bitmap;
        try (InputStream in = resolver.openInputStream(uri)) {
            bitmap = BitmapFactory.decodeStream(in, null, opts);
        }
        if (bitmap == null) {
            throw new ImageException(uri + ": not an image (unrecognised format)");
        }
        try (InputStream in = resolver.openInputStream(uri)) {
            return oriented(bitmap, new ExifInterface(in).getAttributeInt(ExifInterface.TAG_ORIENTATION,
                    ExifInterface.ORIENTATION_NORMAL));
        }
    }

    /** The golden pictures of a build (PNG, no EXIF). */
    static final GoldenReplay.ImageLoader GOLDEN = (File file) -> {
        Bitmap bitmap = BitmapFactory.decodeFile(file.getAbsolutePath(), options());
        if (bitmap == null) {
            throw new ImageException(file + ": not an image");
        }
        return fromBitmap(bitmap);
    };

    private static BitmapFactory.Options options() {
        BitmapFactory.Options opts = new BitmapFactory.Options();
        opts.inPreferredConfig = Bitmap.Config.ARGB_8888;
        opts.inPremultiplied = false; // keep straight alpha: the core composites it over the pad colour
        opts.inScaled = false;
        return opts;
    }

    /** Rotations and mirrors as a gallery shows the photo (PIL's exif_transpose in runtime/image.py). */
    private static Bitmap oriented(Bitmap b, int orientation) {
        Matrix m = new Matrix();
        switch (orientation) {
            case ExifInterface.ORIENTATION_FLIP_HORIZONTAL: m.setScale(-1, 1); break;
            case ExifInterface.ORIENTATION_ROTATE_180: m.setRotate(180); break;
            case ExifInterface.ORIENTATION_FLIP_VERTICAL: m.setScale(1, -1); break;
            case ExifInterface.ORIENTATION_TRANSPOSE: m.setRotate(90); m.postScale(-1, 1); break;
            case ExifInterface.ORIENTATION_ROTATE_90: m.setRotate(90); break;
            case ExifInterface.ORIENTATION_TRANSVERSE: m.setRotate(-90); m.postScale(-1, 1); break;
            case ExifInterface.ORIENTATION_ROTATE_270: m.setRotate(-90); break;
            default: return b;
        }
        return Bitmap.createBitmap(b, 0, 0, b.getWidth(), b.getHeight(), m, false);
    }
}

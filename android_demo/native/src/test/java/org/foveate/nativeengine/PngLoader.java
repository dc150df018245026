package org.foveate.nativeengine;

import java.awt.image.BufferedImage;
import java.awt.image.Raster;
import java.io.File;
import java.io.IOException;

import javax.imageio.ImageIO;

import org.foveate.core.ArgbImage;
import org.foveate.core.GoldenReplay;
import org.foveate.core.ImageException;

/** Golden pictures on a desktop JVM (the app uses BitmapFactory): 8-bit samples straight from the raster. */
final class PngLoader implements GoldenReplay.ImageLoader {
    @Override
    public ArgbImage load(File file) {
        BufferedImage img;
        try {
            img = ImageIO.read(file);
        } catch (IOException e) {
            throw new ImageException(file + ": " + e.getMessage());
        }
        if (img == null) {
            throw new ImageException(file + ": not an image");
        }
        Raster r = img.getRaster();
        int bands = r.getNumBands();
        if (r.getSampleModel().getSampleSize(0) != 8 || (bands != 3 && bands != 4)) {
            throw new ImageException(file + ": expected 8-bit RGB or RGBA");
        }
        int w = img.getWidth();
        int h = img.getHeight();
        int[] px = new int[bands];
        int[] argb = new int[w * h];
        for (int y = 0; y < h; y++) {
            for (int x = 0; x < w; x++) {
                r.getPixel(x, y, px);
                int a = bands == 4 ? px[3] : 255;
                argb[y * w + x] = (a << 24) | (px[0] << 16) | (px[1] << 8) | px[2];
            }
        }
        return new ArgbImage(w, h, argb);
    }
}

package org.foveate.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import org.json.JSONArray;
import org.json.JSONObject;
import org.junit.BeforeClass;
import org.junit.Test;

/** Every image case of the vectors: the 8-bit image exactly, the float tensor within the tolerance. */
public class ImagePreprocessorTest {
    private static JSONObject image;

    @BeforeClass
    public static void load() throws Exception {
        image = Vectors.load().getJSONObject("image");
    }

    @Test
    public void everyImageCase() throws Exception {
        JSONArray cases = image.getJSONArray("cases");
        double tol = image.getDouble("tolerance");
        assertTrue(cases.length() >= 10);
        for (int i = 0; i < cases.length(); i++) {
            JSONObject c = cases.getJSONObject(i);
            String name = c.getString("name");
            ImagePreprocessor pre = new ImagePreprocessor(c.getJSONObject("spec"));
            ArgbImage img = Vectors.rgbaImage(c.getJSONObject("rgba"));
            assertEquals(c.getInt("width"), img.width);
            assertArrayEquals(name + ": rgb8", Vectors.uint8(c.getJSONObject("rgb8")),
                    pre.resizedRgb8(img.argb, img.width, img.height));
            Tensor got = pre.preprocess(img.argb, img.width, img.height);
            JSONObject want = c.getJSONObject("pixels");
            assertArrayEquals(name + ": shape", Vectors.shape(want), got.shape());
            float[] w = Vectors.floats(want);
            float[] g = got.floats();
            for (int k = 0; k < w.length; k++) {
                if (Math.abs(w[k] - g[k]) > tol) {
                    fail(name + ": pixel " + k + " is " + g[k] + ", expected " + w[k]);
                }
            }
        }
    }

    @Test
    public void emptyImageIsRefused() throws Exception {
        ImagePreprocessor pre = new ImagePreprocessor(image.getJSONObject("spec"));
        try {
            pre.preprocess(new int[0], 0, 0);
            fail("a 0x0 image was accepted");
        } catch (ImageException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("zero size"));
        }
        try {
            pre.preprocess(new int[3], 2, 2);
            fail("4 pixels declared, 3 given, accepted");
        } catch (ImageException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("pixels"));
        }
    }

    @Test
    public void oneByOneImageIsPreprocessed() throws Exception {
        ImagePreprocessor pre = new ImagePreprocessor(image.getJSONObject("spec"));
        Tensor t = pre.preprocess(new int[] {0xFF336699}, 1, 1);
        assertArrayEquals(new long[] {1, 3, pre.size, pre.size}, t.shape());
    }

    @Test(expected = ImageException.class)
    public void malformedSpecIsRefused() throws Exception {
        new ImagePreprocessor(new JSONObject("{\"size\": 0}"));
    }
}

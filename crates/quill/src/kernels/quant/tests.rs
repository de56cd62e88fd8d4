use super::*;

#[test]
fn q8_row_quantizes_and_sums() {
    let x: Vec<f32> = (0..64).map(|i| i as f32 - 32.0).collect();
    let r = Q8Row::quantize(&x, QK);
    assert_eq!(r.d.len(), 2);
    assert_eq!(r.q[0], -127);
    assert_eq!(r.sums32.len(), 2);
    assert_eq!(
        r.sums32[0],
        r.q[..32].iter().map(|&v| v as i32).sum::<i32>()
    );
}

#[test]
fn part_rejects_out_of_bounds_and_partial_blocks() {
    let b = Bytes::Owned(vec![0u8; 34].into());
    assert!(QuantPart::new(DType::Q8_0, 1, 32, &b, 0).is_some());
    assert!(QuantPart::new(DType::Q8_0, 2, 32, &b, 0).is_none());
    assert!(QuantPart::new(DType::Q8_0, 1, 16, &b, 0).is_none());
    assert!(QuantPart::new(DType::F32, 1, 32, &b, 0).is_none());
}

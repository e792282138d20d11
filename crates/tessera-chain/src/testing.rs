//! Test support (feature `testing`): an independent check of finalized Bitcoin transactions.

use crate::bitcoin::SpentOutput;

/// Checks with Bitcoin Core's script interpreter (libbitcoinconsensus, Taproot rules on) that
/// the network transaction `raw` spends each of `spent`, in input order; the error names the
/// first input that does not.
pub fn consensus_verifies(raw: &[u8], spent: &[SpentOutput]) -> Result<(), String> {
    let utxos: Vec<bitcoinconsensus::Utxo> = spent
        .iter()
        .map(|o| bitcoinconsensus::Utxo {
            script_pubkey: o.script_pubkey.as_ptr(),
            script_pubkey_len: o.script_pubkey.len() as u32,
            value: o.value as i64,
        })
        .collect();
    for (index, out) in spent.iter().enumerate() {
        bitcoinconsensus::verify(&out.script_pubkey, out.value, raw, Some(&utxos), index)
            .map_err(|e| format!("input {index} does not spend its output: {e:?}"))?;
    }
    Ok(())
}
